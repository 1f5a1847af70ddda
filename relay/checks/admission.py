"""Connection admission: at most `server.max_connections` open sessions, and at most
`server.max_connections_per_ip` from one address (421 4.7.0 beyond either)."""
from __future__ import annotations

from collections import Counter

from relay import replies
from relay.errors import TemporaryError


class Admission:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._open: Counter[str] = Counter()
        self._total = 0

    @property
    def open_sessions(self) -> int:
        return self._total

    def open(self, ip: str) -> None:
        if self._total >= self.max_total or self._open[ip] >= self.max_per_ip:
            raise TemporaryError(replies.R421_TOO_MANY_CONNECTIONS, f"connection from {ip} refused")
        self._open[ip] += 1
        self._total += 1

    def close(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]
        self._total -= 1

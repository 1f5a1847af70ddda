"""Who the client is: password hashes, AUTH credentials, trusted networks, failure throttling.

Passwords are stored as scrypt hashes (`relay users hash`), a slow, salted, memory-hard KDF
from the standard library; verifying one takes tens of milliseconds, so callers run
`Users.verify` off the event loop. Repeated failures from one address are answered more and
more slowly, then refused for a while (`server.auth_failures`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field

from relay import replies
from relay.clock import Clock
from relay.config import AuthFailures, User
from relay.errors import TemporaryError
from relay.model import Principal

_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")
    return f"{_PREFIX}${_N}${_R}${_P}${b64(salt)}${b64(digest)}"


def check_password(password: str | bytes, stored: str) -> bool:
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        if prefix != _PREFIX:
            return False
        unb64 = lambda s: base64.b64decode(s + "=" * (-len(s) % 4))
        pw = password if isinstance(password, bytes) else password.encode()
        computed = hashlib.scrypt(pw, salt=unb64(salt), n=int(n), r=int(r), p=int(p),
                                  dklen=len(unb64(digest)), maxmem=256 * 1024 * 1024)
        return hmac.compare_digest(computed, unb64(digest))
    except (ValueError, TypeError):
        return False


def valid_hash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) == 6 and parts[0] == _PREFIX and all(parts[1:4]) and parts[1].isdigit()


def principal_of(user: User) -> Principal:
    return Principal(user.username, frozenset(s.lower() for s in user.senders))


class Users:
    """The configured users, by name and by trusted network."""

    def __init__(self, users: list[User]) -> None:
        self._by_name = {u.username: u for u in users if u.password_hash}
        self._networks = [(ipaddress.ip_network(net, strict=False), u)
                          for u in users for net in u.networks]
        # Verify unknown users against a real hash too, so timing does not reveal names.
        self._decoy = hash_password(os.urandom(8).hex())

    def by_network(self, ip: str) -> Principal | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if address.version == 6 and address.ipv4_mapped:     # dual-stack listeners
            address = address.ipv4_mapped
        for network, user in self._networks:
            if address.version == network.version and address in network:
                return principal_of(user)
        return None

    def verify(self, username: str, password: bytes) -> Principal | None:
        """Blocking (scrypt): call it in a thread."""
        user = self._by_name.get(username)
        if user is None:
            check_password(password, self._decoy)
            return None
        return principal_of(user) if check_password(password, user.password_hash) else None


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    verifying: int = 0


class AuthThrottle:
    """Counts AUTH failures per client address against `server.auth_failures`."""

    def __init__(self, policy: AuthFailures, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._by_ip: dict[str, _Failures] = {}

    def check(self, ip: str) -> None:
        """Raise 454 4.7.0 while `ip` is locked out, or when the verifications already under
        way from it could reach the lockout (parallel sessions do not multiply guesses)."""
        entry = self._by_ip.get(ip)
        if entry and (entry.locked_until > self._clock.now()
                      or len(entry.times) + entry.verifying >= self.policy.lock_after):
            raise TemporaryError(replies.R454_AUTH_LOCKED, f"AUTH locked out for {ip}")

    def verifying(self, ip: str, delta: int) -> None:
        """Count a password check under way from `ip` (+1 before, -1 after)."""
        entry = self._by_ip.setdefault(ip, _Failures())
        entry.verifying += delta

    def delay(self, ip: str) -> float:
        """Seconds to wait before answering a failed AUTH from `ip` (doubling, at most 8 s)."""
        entry = self._by_ip.get(ip)
        excess = len(entry.times) - self.policy.slow_after if entry else 0
        return 0.0 if excess <= 0 else float(min(2 ** (excess - 1), 8))

    def failed(self, ip: str) -> float:
        """Record a failure; return how long to wait before answering it."""
        now = self._clock.now()
        entry = self._by_ip.setdefault(ip, _Failures())
        entry.times = [t for t in entry.times if now - t < self.policy.window] + [now]
        delay = self.delay(ip)
        if len(entry.times) >= self.policy.lock_after:
            entry.locked_until = now + self.policy.lockout
            entry.times.clear()
        if len(self._by_ip) > 10_000:          # bound memory under a distributed attack
            self._forget_idle(now)
        return delay

    def succeeded(self, ip: str) -> None:
        entry = self._by_ip.get(ip)
        if entry and entry.locked_until <= self._clock.now() and not entry.verifying:
            del self._by_ip[ip]

    def _forget_idle(self, now: float) -> None:
        for ip in [ip for ip, e in self._by_ip.items()
                   if e.locked_until <= now and not e.verifying
            and all(now - t >= self.policy.window for t in e.times)]:
            del self._by_ip[ip]

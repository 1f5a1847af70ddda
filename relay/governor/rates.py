"""Sliding-window rate limits: at most `count` units in any `period` seconds, per key.

A window holds (time, units) entries for the last period only, so its memory is bounded by
the rate itself (a `1000/h` limit keeps at most 1000 entries per domain).
"""
from __future__ import annotations

from collections import deque

from relay.units import Rate


class SlidingWindow:
    def __init__(self) -> None:
        self._entries: dict[str, deque[tuple[float, int]]] = {}

    def _window(self, key: str, period: float, now: float) -> deque[tuple[float, int]]:
        window = self._entries.setdefault(key, deque())
        while window and window[0][0] <= now - period:
            window.popleft()
        return window

    def wait_until(self, key: str, rate: Rate, units: int, now: float) -> float | None:
        """None when `units` more fit now; else the earliest time they will. A burst larger
        than the whole rate goes alone, once the window is empty."""
        window = self._window(key, rate.period, now)
        used = sum(n for _, n in window)
        if not window or used + units <= rate.count:
            return None
        need = used + min(units, rate.count) - rate.count
        for ts, n in window:
            need -= n
            if need <= 0:
                return ts + rate.period
        return window[-1][0] + rate.period

    def record(self, key: str, units: int, now: float) -> None:
        self._entries.setdefault(key, deque()).append((now, units))

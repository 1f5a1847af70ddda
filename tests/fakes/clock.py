"""A relay Clock whose time moves only when a test says so: `sleep` records the delay and
advances the time instead of waiting, so governor and throttle tests never sleep."""
from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.t = now
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

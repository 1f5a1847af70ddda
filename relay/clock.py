"""Time, injected: the relay asks a Clock, tests hand it a FakeClock and never sleep."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


DAY = 86400                              # seconds in a UTC day: daily caps and volumes


def day_of(ts: float) -> int:
    """The UTC day number of a timestamp."""
    return int(ts // DAY)


class Clock(Protocol):
    def now(self) -> float: ...          # wall-clock seconds since the epoch
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

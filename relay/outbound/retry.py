"""When to try again: exponential backoff with jitter, capped (`spool.retry`)."""
from __future__ import annotations

import random

from relay.config import Retry


class Backoff:
    def __init__(self, policy: Retry, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()

    def delay(self, attempts: int) -> float:
        """Seconds before attempt number `attempts + 1`; +-20% jitter spreads retries out."""
        base = self.policy.initial * (2 ** min(max(attempts - 1, 0), 32))
        if base * 1.2 >= self.policy.max:      # at the cap: spread below it, never above
            return self.policy.max * self.rng.uniform(0.8, 1.0)
        return base * self.rng.uniform(0.8, 1.2)

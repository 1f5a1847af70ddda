"""relay.outbound.retry: exponential backoff, capped, with +-20% jitter."""
from __future__ import annotations

import random

import pytest

from relay.config import Retry
from relay.outbound.retry import Backoff

POLICY = Retry(initial=60, max=3600)


class NoJitter(random.Random):
    """uniform() returns the middle of its range: the un-jittered delay."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@pytest.mark.parametrize(("attempts", "expected"), [
    (0, 60), (1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1920),
])
def test_delay_doubles_from_initial(attempts, expected):
    """After the first failed attempt the wait is `initial`, then doubles each time."""
    assert Backoff(POLICY, NoJitter()).delay(attempts) == pytest.approx(expected)


@pytest.mark.parametrize("attempts", [7, 8, 20, 200])
def test_delay_is_capped_at_max(attempts):
    """Past the cap the delay stays within [0.8 max, max], however many attempts (no overflow)."""
    assert 0.8 * 3600 <= Backoff(POLICY, NoJitter()).delay(attempts) <= 3600


def test_jitter_stays_within_20_percent():
    """With a seeded generator every delay lies within +-20% of its base, and varies."""
    backoff = Backoff(POLICY, random.Random(1234))
    for attempts, base in ((1, 60), (3, 240)):
        samples = [backoff.delay(attempts) for _ in range(500)]
        assert all(0.8 * base <= s <= 1.2 * base for s in samples)
        assert max(samples) - min(samples) > 0.2 * base        # it is spread, not constant


def test_jitter_never_exceeds_the_cap():
    """At the cap, jitter only shortens the delay: retry.max is a true maximum."""
    backoff = Backoff(POLICY, random.Random(99))
    samples = [backoff.delay(30) for _ in range(500)]
    assert all(0.8 * 3600 <= s <= 3600 for s in samples)


def test_same_seed_same_delays():
    """Delays are reproducible with the same seed (the generator is injected)."""
    a = Backoff(POLICY, random.Random(7))
    b = Backoff(POLICY, random.Random(7))
    assert [a.delay(n) for n in range(10)] == [b.delay(n) for n in range(10)]

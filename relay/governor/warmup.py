"""Daily caps: the warm-up ramp of a new domain, then the spike guard.

Warm-up (REFERENCE "Warm-up"): warm-up day N may carry at most `schedule[N]` recipients;
past the last step there is no warm-up cap. Day N is the Nth day since the first delivery
through relay, counting only the healthy days: a day the domain was paused, or whose bounce
or complaint rate went over the reputation limit, does not move the ramp on. The
spike guard, after warm-up: no day above `max_growth` x the average of the 7 previous days,
once the domain has 7 days of history (before that there is nothing to compare with), and
never below the warm-up's first step (50 without a schedule). Bulk mail's part of either
cap: `bulk_share`.
"""
from __future__ import annotations

from typing import Iterable

SPIKE_DAYS = 7
SPIKE_FLOOR = 50          # without a warm-up schedule: DESIGN's recommended first step


def warmup_day(first_send_day: int | None, today: int, unhealthy: Iterable[int] = ()) -> int:
    """The days since the first send, today excluded, less those that did not count."""
    if first_send_day is None:
        return 0
    return max(0, today - first_send_day - sum(first_send_day <= d < today for d in set(unhealthy)))


def warmup_cap(schedule: list[int], day: int) -> int | None:
    return schedule[day] if day < len(schedule) else None


def bulk_share(cap: int, share: float, reason: str, previous_days: list[int]) -> int:
    """What bulk mail (`share`: 1 - limits.bulk.reserve) may use of a day's cap: its share,
    at least 1 of a cap above 0 (as of a rate); and of the spike guard's cap, never less than
    the average of the 7 previous days. Held to its share of `max_growth` x that average, a
    domain sending only bulk mail at a steady pace would see its cap shrink day after day
    whenever share x max_growth < 1 (80% x 1.2), down to the floor; so the reserve comes
    out of the growth, and bulk may always keep the pace it had."""
    if not cap:
        return 0
    mine = max(1, int(cap * share))
    if reason == "spike" and share < 1.0:
        mine = max(mine, min(cap, sum(previous_days) // SPIKE_DAYS))
    return mine


def spike_cap(max_growth: float | None, previous_days: list[int], history_days: int,
              floor: int = SPIKE_FLOOR) -> int | None:
    """`previous_days`: volumes of the 7 days before today (0 for a quiet day). The cap is
    never below `floor`, what a new domain may send on its first day (the schedule's first
    step): a provider that gets a few recipients a week is no spike at 5."""
    if max_growth is None or history_days < SPIKE_DAYS:
        return None
    average = sum(previous_days) / SPIKE_DAYS
    return max(floor, int(max_growth * average)) if average > 0 else None

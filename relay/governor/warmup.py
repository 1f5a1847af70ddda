"""Daily caps: the warm-up ramp of a new domain, then the spike guard.

Warm-up (REFERENCE "Warm-up"): day N since the domain's first delivery through relay may
carry at most `schedule[N]` recipients; past the last step there is no warm-up cap. The
spike guard, after warm-up: no day above `max_growth` x the average of the 7 previous days,
once the domain has 7 days of history (before that there is nothing to compare with).
"""
from __future__ import annotations

SPIKE_DAYS = 7


def warmup_day(first_send_day: int | None, today: int) -> int:
    return 0 if first_send_day is None else max(0, today - first_send_day)


def warmup_cap(schedule: list[int], day: int) -> int | None:
    return schedule[day] if day < len(schedule) else None


def spike_cap(max_growth: float | None, previous_days: list[int], history_days: int) -> int | None:
    """`previous_days`: volumes of the 7 days before today (0 for a quiet day)."""
    if max_growth is None or history_days < SPIKE_DAYS:
        return None
    average = sum(previous_days) / SPIKE_DAYS
    return int(max_growth * average) if average > 0 else None

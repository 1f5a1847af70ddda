"""relay.governor.warmup: the warm-up ramp of a new domain, then the spike guard.

Warm-up day N is the number of UTC days since the domain's first delivery through relay;
`schedule[N]` caps that day and there is no warm-up cap past the last step. The spike guard
caps a day at `max_growth` x the average of the 7 previous days, once there are 7 days of
history.
"""
from __future__ import annotations

import pytest

from relay.governor.warmup import SPIKE_DAYS, spike_cap, warmup_cap, warmup_day

SCHEDULE = [2, 4, 6]


def test_a_domain_that_never_delivered_is_on_day_0():
    """No first send yet: today is warm-up day 0."""
    assert warmup_day(None, 20_000) == 0


@pytest.mark.parametrize(("first", "today", "day"), [
    (20_000, 20_000, 0),      # the day of the first delivery
    (20_000, 20_001, 1),
    (20_000, 20_002, 2),
    (20_000, 20_100, 100),
])
def test_the_warmup_day_counts_utc_days_since_the_first_delivery(first, today, day):
    """Day N is `today - first delivery day`."""
    assert warmup_day(first, today) == day


def test_a_first_send_after_today_is_day_0():
    """A clock stepped back behind the first send never gives a negative day."""
    assert warmup_day(20_005, 20_000) == 0


@pytest.mark.parametrize(("day", "cap"), [(0, 2), (1, 4), (2, 6)])
def test_each_warmup_day_has_its_step_of_the_schedule(day, cap):
    """Day 0 is the first step, day 1 the second, and the last step caps the last day."""
    assert warmup_cap(SCHEDULE, day) == cap


@pytest.mark.parametrize("day", [3, 4, 365])
def test_past_the_last_step_there_is_no_warmup_cap(day):
    """Once the schedule is over the domain is warmed up."""
    assert warmup_cap(SCHEDULE, day) is None


@pytest.mark.parametrize("day", [0, 1, 10])
def test_an_empty_schedule_means_no_warmup(day):
    """Without a schedule no day is capped, not even day 0."""
    assert warmup_cap([], day) is None


def test_the_spike_guard_needs_7_days_of_history():
    """With fewer than 7 days since the first delivery there is nothing to compare with."""
    assert SPIKE_DAYS == 7
    busy_week = [100] * 7
    for history in range(7):
        assert spike_cap(2.0, busy_week, history) is None
    assert spike_cap(2.0, busy_week, 7) == 200
    assert spike_cap(2.0, busy_week, 30) == 200


def test_no_spike_cap_when_the_average_is_0():
    """A domain quiet for a week is not capped at 0: there is no average to grow from."""
    assert spike_cap(2.0, [0] * 7, 30) is None


def test_no_spike_cap_when_the_guard_is_not_configured():
    """`spike.max_growth` unset: no cap whatever the history."""
    assert spike_cap(None, [100] * 7, 30) is None


@pytest.mark.parametrize(("growth", "previous", "cap"), [
    (2.0, [100] * 7, 200),
    (1.5, [100] * 7, 150),
    (3.0, [700, 0, 0, 0, 0, 0, 0], 300),      # quiet days count as 0 in the average (700 / 7)
    (2.0, [100, 200, 300, 400, 500, 600, 700], 800),  # average 400
    (1.5, [101] * 7, 151),                    # 151.5 rounds down: never above growth x average
])
def test_the_spike_cap_is_max_growth_times_the_7_day_average(growth, previous, cap):
    """cap = max_growth x (sum of the 7 previous days / 7), in whole recipients."""
    assert spike_cap(growth, previous, 30) == cap


@pytest.mark.parametrize(("previous", "floor", "cap"), [
    ([3, 0, 0, 0, 0, 0, 0], 50, 50),          # 2 x 3/7 would be 0: a small provider would freeze
    ([10] * 7, 50, 50),
    ([10] * 7, 5, 20),                        # a schedule starting at 5: its floor
    ([30] * 7, 50, 60),                       # above the floor: the guard's own cap
])
def test_the_spike_cap_is_never_below_a_first_days_step(previous, floor, cap):
    """A ramp with a few recipients a week is no spike at the schedule's first step (50
    without a schedule): the cap is never below it."""
    assert spike_cap(2.0, previous, 30, floor) == cap


def test_the_spike_floor_without_a_schedule_is_50():
    """DESIGN's recommended first step."""
    assert spike_cap(2.0, [10] * 7, 30) == 50

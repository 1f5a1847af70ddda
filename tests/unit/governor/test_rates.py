"""relay.governor.rates: at most `count` units in any `period` seconds, per key.

Every call is given its `now` explicitly: the window never reads a clock.
"""
from __future__ import annotations

import json

from relay.governor.rates import SlidingWindow
from relay.units import parse_rate

PER_MINUTE_3 = parse_rate("3/min")
PER_MINUTE_5 = parse_rate("5/min")


def send(window: SlidingWindow, key: str, rate, units: int, now: float) -> float | None:
    """Ask, and record the units when they may go now; returns what was answered."""
    until = window.wait_until(key, rate, units, now)
    if until is None:
        window.record(key, units, now)
    return until


def test_up_to_count_units_fit_in_one_period():
    """3/min: three single sends in the same minute go at once, the fourth must wait."""
    window = SlidingWindow()
    assert [send(window, "acme.fr", PER_MINUTE_3, 1, t) for t in (0.0, 10.0, 20.0)] == [None] * 3
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 30.0) is not None


def test_the_wait_ends_when_the_oldest_entry_leaves_the_window():
    """With the window full, one more unit may go once the oldest entry is a period old."""
    window = SlidingWindow()
    for t in (0.0, 10.0, 20.0):
        send(window, "acme.fr", PER_MINUTE_3, 1, t)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 30.0) == 60.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 59.999) == 60.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 60.0) is None


def test_the_wait_is_until_enough_old_entries_have_left():
    """5/min holding 2@0, 2@10 and 1@20: 3 more need 3 units to leave, so both the 0 s and the
    10 s entries (4 units) must go: they may be sent at 10 + 60 = 70."""
    window = SlidingWindow()
    for units, t in ((2, 0.0), (2, 10.0), (1, 20.0)):
        assert send(window, "acme.fr", PER_MINUTE_5, units, t) is None
    assert window.wait_until("acme.fr", PER_MINUTE_5, 3, 30.0) == 70.0
    assert window.wait_until("acme.fr", PER_MINUTE_5, 2, 30.0) == 60.0    # the 0 s entry suffices
    assert window.wait_until("acme.fr", PER_MINUTE_5, 3, 69.0) == 70.0
    assert window.wait_until("acme.fr", PER_MINUTE_5, 3, 70.0) is None


def test_units_that_still_fit_go_at_once_in_a_partly_used_window():
    """5/min holding 3 units: 2 more fit now; 3 more do not."""
    window = SlidingWindow()
    send(window, "acme.fr", PER_MINUTE_5, 3, 0.0)
    assert window.wait_until("acme.fr", PER_MINUTE_5, 2, 1.0) is None
    assert window.wait_until("acme.fr", PER_MINUTE_5, 3, 1.0) == 60.0


def test_a_burst_larger_than_the_rate_goes_alone_when_the_window_is_empty():
    """10 units against 3/min would never fit: they go when nothing else is in the window."""
    window = SlidingWindow()
    assert send(window, "acme.fr", PER_MINUTE_3, 10, 0.0) is None
    # after it, even one unit waits until the whole burst has left the window
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 5.0) == 60.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 60.0) is None


def test_a_burst_larger_than_the_rate_waits_for_the_window_to_empty():
    """10 units against 3/min with entries at 0 s and 5 s wait until the last one has left."""
    window = SlidingWindow()
    send(window, "acme.fr", PER_MINUTE_3, 1, 0.0)
    send(window, "acme.fr", PER_MINUTE_3, 1, 5.0)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 10, 6.0) == 65.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 10, 64.0) == 65.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 10, 65.0) is None


def test_entries_expire_after_one_period():
    """An entry counts during (t, t + period) and no longer from t + period on."""
    window = SlidingWindow()
    send(window, "acme.fr", PER_MINUTE_3, 3, 100.0)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 3, 159.9) == 160.0
    assert window.wait_until("acme.fr", PER_MINUTE_3, 3, 160.0) is None
    # expired entries are gone for good: a full new window is available
    for t in (161.0, 162.0, 163.0):
        assert send(window, "acme.fr", PER_MINUTE_3, 1, t) is None
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 164.0) == 221.0


def test_asking_does_not_consume():
    """Only `record` uses the rate: asking many times leaves the window as it was."""
    window = SlidingWindow()
    for _ in range(10):
        assert window.wait_until("acme.fr", PER_MINUTE_3, 3, 0.0) is None
    send(window, "acme.fr", PER_MINUTE_3, 3, 0.0)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 0.0) == 60.0


def test_keys_have_their_own_windows():
    """A full window for one domain does not hold another."""
    window = SlidingWindow()
    send(window, "acme.fr", PER_MINUTE_3, 3, 0.0)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 1, 1.0) == 60.0
    assert window.wait_until("other.fr", PER_MINUTE_3, 3, 1.0) is None


def test_the_rate_is_read_at_each_question():
    """The same window answered against a larger rate lets more through (a config reload)."""
    window = SlidingWindow()
    send(window, "acme.fr", PER_MINUTE_3, 3, 0.0)
    assert window.wait_until("acme.fr", PER_MINUTE_3, 2, 1.0) == 60.0
    assert window.wait_until("acme.fr", PER_MINUTE_5, 2, 1.0) is None


def test_exported_windows_give_the_same_answers_after_a_restart():
    """What a delivery process saves as it stops, the next one starts from: the rate holds."""
    rate = parse_rate("3/min")
    before = SlidingWindow()
    for t in (0.0, 10.0, 20.0):
        before.record("acme.fr", 1, t, rate.period)
    saved = json.loads(json.dumps(before.export(horizon=20.0 - 60)))    # through the spool
    after = SlidingWindow(saved)
    assert after.wait_until("acme.fr", rate, 1, 30.0) == before.wait_until("acme.fr", rate, 1, 30.0) == 60.0
    assert after.wait_until("acme.fr", rate, 1, 60.0) is None            # the first one expired


def test_export_leaves_out_entries_older_than_the_horizon():
    window = SlidingWindow()
    window.record("acme.fr", 2, 100.0)
    window.record("acme.fr", 1, 200.0)
    window.record("old.fr", 5, 50.0)
    assert window.export(horizon=150.0) == {"acme.fr": [(200.0, 1)]}

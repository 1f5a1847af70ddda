"""relay.governor.governor: how many of a message's recipients may go now, and when the rest.

Time is a FakeClock set by hand; nothing sleeps. The clock starts at 10:00 UTC on a day
`TODAY`, so "the next UTC midnight" (`TOMORROW`) is unambiguous. `reserve` grants what fits
every limit and counts it at once (rate windows, recipients in flight); deliveries are then
reported with `delivered()`, as the delivery pipeline does after each attempt; a restart is a
new Governor built from the state the spool loads (`relay.state.sqlite.load`).
"""
from __future__ import annotations

import sqlite3

import pytest

from relay.clock import day_of
from relay.config import Limits
from relay.governor.governor import WHOLE, Governor, Grant, Hold, HoldReason, ramp
from relay.governor.rates import GRANULARITY
from relay.governor.warmup import SPIKE_DAYS
from relay.state import tables as state
from tests.fakes.clock import FakeClock

DAY = 86400
TODAY = 20_000                        # a UTC day number
MIDNIGHT = TODAY * DAY
TEN_AM = MIDNIGHT + 10 * 3600
TOMORROW = MIDNIGHT + DAY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TEN_AM)


def limits(**data) -> Limits:
    return Limits.model_validate(data)


def governor(clock: FakeClock, first_send: dict | None = None, volumes: dict | None = None,
             **data) -> Governor:
    return Governor(limits(**data), clock, first_send or {}, volumes or {})


def send(gov: Governor, domain: str, recipients: int = 1, bulk: bool = False) -> Grant:
    """What the delivery pipeline does: reserve, send the granted recipients, and report them
    all delivered."""
    grant = gov.reserve(domain, recipients, bulk)
    gov.delivered(domain, grant.count, grant.count)
    return grant


def send_until_held(gov: Governor, domain: str, limit: int = 1000,
                    bulk: bool = False) -> tuple[int, Hold | None]:
    """Single-recipient messages until one is held: (how many went, the hold)."""
    for sent in range(limit):
        grant = send(gov, domain, bulk=bulk)
        if grant.hold is not None:
            assert grant.count == 0
            return sent, grant.hold
    return limit, None


def is_held(grant: Grant, reason: HoldReason) -> bool:
    return grant.count == 0 and grant.hold is not None and grant.hold.reason is reason


def on_time(until: float, expected: float, period: float = 60.0) -> bool:
    """`until` is `expected`, or later by at most 1/GRANULARITY of the rate's period: a
    window counts a send to the end of its slice of the period (`SlidingWindow.record`), so
    it leaves the window that much late at most, never early."""
    return expected - 1e-6 <= until <= expected + period / GRANULARITY + 1e-6


# --- no limits --------------------------------------------------------------------------

def test_without_limits_everything_is_granted(clock):
    """No domain_rate, no warm-up, no spike guard: nothing is ever held, whatever the size."""
    gov = governor(clock)
    assert send_until_held(gov, "acme.fr", limit=500) == (500, None)
    assert gov.reserve("acme.fr", 10_000) == Grant(10_000, None)


# --- domain_rate ----------------------------------------------------------------------

def test_default_rate_holds_the_recipient_that_would_exceed_it(clock):
    """default 2/min: two sends go, the third is held for "rate" until the first is a
    minute old."""
    gov = governor(clock, domain_rate={"default": "2/min"})
    assert send(gov, "acme.fr") == Grant(1, None)
    clock.t += 10
    assert send(gov, "acme.fr") == Grant(1, None)
    clock.t += 10
    assert gov.reserve("acme.fr", 1) == Grant(0, Hold(TEN_AM + 60, HoldReason.RATE,
                                                      "domain_rate 2/min"))
    clock.t = TEN_AM + 59.5
    assert gov.reserve("acme.fr", 1).hold.until == TEN_AM + 60
    clock.t = TEN_AM + 60
    assert gov.reserve("acme.fr", 1) == Grant(1, None)


def test_a_domains_own_rate_replaces_the_default(clock):
    """acme.fr: 1/h overrides default 100/min; other domains get the default."""
    gov = governor(clock, domain_rate={"default": "100/min", "acme.fr": "1/h"})
    assert send(gov, "acme.fr").count == 1
    hold = gov.reserve("acme.fr", 1).hold
    assert (hold.until, hold.reason, hold.detail) == (TEN_AM + 3600, HoldReason.RATE,
                                                      "domain_rate 1/h")
    assert send_until_held(gov, "other.fr")[0] == 100


def test_a_domain_without_a_rate_and_no_default_is_not_rate_limited(clock):
    """domain_rate names acme.fr only: other.fr has no rate limit."""
    gov = governor(clock, domain_rate={"acme.fr": "1/h"})
    assert send(gov, "acme.fr").count == 1
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.RATE)
    assert send_until_held(gov, "other.fr", limit=300) == (300, None)


def test_the_rate_counts_recipients_not_messages(clock):
    """5/min: a 3-recipient message, then another: 6 in all, so the second gets 2 recipients
    now and its third waits for the window to move."""
    gov = governor(clock, domain_rate={"default": "5/min"})
    assert send(gov, "acme.fr", 3) == Grant(3, None)
    assert gov.reserve("acme.fr", 3) == Grant(2, Hold(TEN_AM + 60, HoldReason.RATE,
                                                      "domain_rate 5/min"))
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.RATE)


def test_a_message_larger_than_the_rate_leaves_at_the_rate(clock):
    """10/min and one message to 25 recipients: 10 now, 10 a minute later, the last 5 a
    minute after that. No burst passes the rate whole, however large."""
    gov = governor(clock, domain_rate={"default": "10/min"})
    left, granted = 25, []
    while left:
        grant = send(gov, "acme.fr", left)
        granted.append((clock.t - TEN_AM, grant.count))
        left -= grant.count
        if grant.hold:
            assert grant.hold.reason is HoldReason.RATE
            clock.t = grant.hold.until
    assert granted == [(0, 10), (60, 10), (120, 5)]


def test_a_refused_reservation_does_not_use_the_rate(clock):
    """Only what is granted counts; being asked and held costs nothing."""
    gov = governor(clock, domain_rate={"default": "1/min"})
    assert send(gov, "acme.fr").count == 1
    for _ in range(5):
        assert gov.reserve("acme.fr", 1) == Grant(0, Hold(TEN_AM + 60, HoldReason.RATE,
                                                          "domain_rate 1/min"))
    clock.t = TEN_AM + 60
    assert send(gov, "acme.fr").count == 1
    assert gov.reserve("acme.fr", 1).hold.until == TEN_AM + 120


def test_the_rate_counts_attempts_that_did_not_deliver(clock):
    """A recipient handed to the route counts against the rate even if it was deferred."""
    gov = governor(clock, domain_rate={"default": "1/min"})
    assert gov.reserve("acme.fr", 1) == Grant(1, None)
    gov.delivered("acme.fr", 0, attempted=1)
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.RATE)


# --- warm-up --------------------------------------------------------------------------

WARMUP = {"warmup": {"schedule": [2, 4, 6]}}


def test_warmup_day_0_caps_the_first_day(clock):
    """schedule [2, 4, 6]: on the day of the first delivery 2 recipients go; the third is
    held for "warmup" until the next UTC midnight."""
    gov = governor(clock, **WARMUP)
    sent, hold = send_until_held(gov, "acme.fr")
    assert sent == 2
    assert hold.until == TOMORROW
    assert hold.reason is HoldReason.WARMUP
    assert "2/day" in hold.detail


def test_warmup_days_1_and_last_and_past_the_schedule(clock):
    """Day 1 carries 4, day 2 (the last step) 6, and from day 3 on nothing is capped."""
    gov = governor(clock, **WARMUP)
    caps = []
    for day in range(3):
        clock.t = TEN_AM + day * DAY
        sent, hold = send_until_held(gov, "acme.fr")
        assert (hold.until, hold.reason) == (TOMORROW + day * DAY, HoldReason.WARMUP)
        caps.append(sent)
    assert caps == [2, 4, 6]
    clock.t = TEN_AM + 3 * DAY
    assert send_until_held(gov, "acme.fr", limit=500) == (500, None)


def test_a_message_larger_than_the_days_cap_leaves_over_several_days(clock):
    """schedule [10, 20, 40], one message to 60 recipients on day 0: 10 go now and the rest
    is held until midnight; day 1 carries 20 of them, day 2 the last 30. No first message of
    the day passes the cap whole."""
    gov = governor(clock, warmup={"schedule": [10, 20, 40]})
    grant = send(gov, "acme.fr", 60)
    assert grant.count == 10
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
    assert "10/day" in grant.hold.detail
    clock.t = TOMORROW
    grant = send(gov, "acme.fr", 50)
    assert (grant.count, grant.hold.until) == (20, TOMORROW + DAY)
    clock.t = TOMORROW + DAY
    assert send(gov, "acme.fr", 30) == Grant(30, None)
    assert gov.status("acme.fr")["today"] == 30


def test_a_message_gets_what_is_left_of_the_cap(clock):
    """Cap 2, 1 delivered: a 2-recipient message gets 1 recipient now and the other waits
    until midnight; a later 1-recipient message is held too."""
    gov = governor(clock, **WARMUP)
    assert send(gov, "acme.fr").count == 1
    grant = gov.reserve("acme.fr", 2)
    assert grant.count == 1
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
    gov.delivered("acme.fr", 1, 1)
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.WARMUP)


def test_only_delivered_recipients_count_toward_the_cap(clock):
    """Attempts the provider deferred deliver nothing and use none of the day's cap."""
    gov = governor(clock, **WARMUP)
    for _ in range(5):
        assert gov.reserve("acme.fr", 1) == Grant(1, None)
        gov.delivered("acme.fr", 0, attempted=1)
    assert send_until_held(gov, "acme.fr")[0] == 2


def test_the_warmup_day_counts_from_the_first_delivery_not_from_start(clock):
    """A governor started on day D whose domain first delivers on D+2: D+2 is warm-up day 0."""
    gov = governor(clock, **WARMUP)
    clock.t = TEN_AM + 2 * DAY
    assert send_until_held(gov, "acme.fr")[0] == 2
    assert gov.status("acme.fr")["warmup_day"] == 0


def test_an_attempt_that_delivered_nothing_does_not_start_the_warmup(clock):
    """Day 0 is the day of the first *delivery*: a day of deferrals does not start the
    schedule (the spool only records a first send with a delivery, so a restart agrees)."""
    gov = governor(clock, **WARMUP)
    assert gov.reserve("acme.fr", 1) == Grant(1, None)
    gov.delivered("acme.fr", 0, attempted=1)   # what the pipeline reports for a 451
    clock.t += DAY
    assert gov.status("acme.fr")["warmup_day"] == 0
    assert send_until_held(gov, "acme.fr")[0] == 2


def test_an_empty_schedule_caps_nothing(clock):
    """warmup.schedule [] (the default): no warm-up cap, even on day 0."""
    gov = governor(clock, warmup={"schedule": []})
    assert send_until_held(gov, "acme.fr", limit=300) == (300, None)


def test_the_hold_is_the_rate_while_the_cap_has_room_and_tomorrow_once_it_has_none(clock):
    """2/min and a cap of 4: after two, the rate holds (a short wait) since the cap has room
    for more; once the cap is reached the hold is until midnight, even while the window is
    full too (waiting for the window would only end in the cap's hold)."""
    gov = governor(clock, domain_rate={"default": "2/min"}, warmup={"schedule": [4]})
    assert send(gov, "acme.fr", 2).count == 2
    hold = gov.reserve("acme.fr", 1).hold
    assert (hold.reason, hold.until) == (HoldReason.RATE, TEN_AM + 60)
    clock.t += 60
    assert send(gov, "acme.fr", 2) == Grant(2, None)        # the cap and the window are full
    hold = gov.reserve("acme.fr", 1).hold
    assert (hold.reason, hold.until) == (HoldReason.WARMUP, TOMORROW)


def test_a_partial_grant_is_held_by_whichever_limit_stops_the_rest(clock):
    """5/min and a cap of 8: asking 7 grants 5 and the rest waits for the window (the cap
    still has room); asking 7 a minute later grants 3, what is left of the cap, and the rest
    waits for midnight."""
    gov = governor(clock, domain_rate={"default": "5/min"}, warmup={"schedule": [8]})
    grant = send(gov, "acme.fr", 7)
    assert (grant.count, grant.hold.reason, grant.hold.until) == (5, HoldReason.RATE, TEN_AM + 60)
    clock.t += 60
    grant = send(gov, "acme.fr", 7)
    assert (grant.count, grant.hold.reason, grant.hold.until) == (3, HoldReason.WARMUP, TOMORROW)


# --- restart: state as the spool loads it -----------------------------------------------

class SpoolState:
    """The governance tables in an in-memory SQLite: written as the spool writes them with
    each outcome, read as the delivery process reads them at start."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(state.SCHEMA)

    def add(self, domain: str, count: int, now: float) -> None:
        state.add_deliveries(self.conn, domain, count, now)

    def load(self, now: float):
        return state.load(self.conn, day_of(now) - SPIKE_DAYS - 1)


def test_a_restart_does_not_reset_todays_volume_or_the_warmup_day(clock):
    """Day 1 of [2, 4, 6] with 3 delivered before a restart: after it, a 2-recipient message
    gets one and the other is held until midnight, exactly as without the restart."""
    persisted = SpoolState()
    before = governor(clock, **WARMUP)
    for day, count in ((0, 2), (1, 3)):
        clock.t = TEN_AM + day * DAY
        for _ in range(count):
            assert send(before, "acme.fr").count == 1
            persisted.add("acme.fr", 1, clock.now())
    status = before.status("acme.fr")

    first_send, volumes = persisted.load(clock.now())
    after = Governor(limits(**WARMUP), clock, first_send, volumes)
    assert after.status("acme.fr") == status == {
        "state": "active", "warmup_day": 1, "today": 3, "cap": 4, "cap_reason": "warmup",
        "next_release": None, "rate": None}
    for gov in (before, after):
        grant = gov.reserve("acme.fr", 2)
        assert (grant.count, grant.hold.until, grant.hold.reason) == (
            1, TOMORROW + DAY, HoldReason.WARMUP)
        gov.delivered("acme.fr", 1, 1)
        assert gov.reserve("acme.fr", 1).hold.until == TOMORROW + DAY


def test_a_restart_on_a_later_day_keeps_the_warmup_day(clock):
    """First delivery on day D; a governor started on D+2 from the spool's state is on
    warm-up day 2 (cap 6), not day 0."""
    persisted = SpoolState()
    persisted.add("acme.fr", 2, TEN_AM)
    persisted.add("acme.fr", 4, TEN_AM + DAY)
    clock.t = TEN_AM + 2 * DAY
    first_send, volumes = persisted.load(clock.now())
    gov = Governor(limits(**WARMUP), clock, first_send, volumes)
    assert gov.status("acme.fr")["warmup_day"] == 2
    assert send_until_held(gov, "acme.fr")[0] == 6


def test_a_restart_past_the_schedule_stays_warmed_up(clock):
    """First delivery 10 days ago: after a restart the domain is past [2, 4, 6]."""
    persisted = SpoolState()
    persisted.add("acme.fr", 1, TEN_AM - 10 * DAY)
    first_send, volumes = persisted.load(clock.now())
    gov = Governor(limits(**WARMUP), clock, first_send, volumes)
    assert send_until_held(gov, "acme.fr", limit=100) == (100, None)


# --- spike guard ----------------------------------------------------------------------

def spike_history(per_day: list[int], first_days_ago: int = 10) -> tuple[dict, dict]:
    """first_send and volumes for acme.fr: per_day[0] is yesterday, per_day[6] 7 days ago."""
    volumes = {("acme.fr", TODAY - i): n for i, n in enumerate(per_day, start=1)}
    return {"acme.fr": TEN_AM - first_days_ago * DAY}, volumes


def test_the_spike_guard_caps_today_at_max_growth_times_the_average(clock):
    """7 days of 100/day and max_growth 2.0: today carries 200. With 199 delivered, a
    2-recipient message gets the 200th and its other recipient is held for "spike" until
    midnight."""
    first, volumes = spike_history([100] * 7)
    volumes[("acme.fr", TODAY)] = 199
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0}, **WARMUP)
    grant = send(gov, "acme.fr", 2)
    assert grant.count == 1
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.SPIKE)
    assert "200/day" in grant.hold.detail
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.SPIKE)


def test_the_spike_cap_counted_from_deliveries(clock):
    """The same cap, reached one delivery at a time."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    sent, hold = send_until_held(gov, "acme.fr")
    assert sent == 200
    assert (hold.until, hold.reason) == (TOMORROW, HoldReason.SPIKE)


def test_quiet_days_count_as_zero_in_the_spike_average(clock):
    """5 days of 140 and 2 quiet days: average 100, cap 200."""
    first, volumes = spike_history([140, 0, 140, 140, 0, 140, 140])
    del volumes[("acme.fr", TODAY - 2)]      # a quiet day has no row at all
    volumes[("acme.fr", TODAY)] = 200
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.SPIKE)
    assert gov.status("acme.fr")["cap"] == 200


def test_no_spike_cap_before_7_days_of_history(clock):
    """First delivery 6 days ago (the schedule already over): nothing to compare with yet."""
    first, volumes = spike_history([100] * 6, first_days_ago=6)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0}, warmup={"schedule": [50]})
    assert send_until_held(gov, "acme.fr", limit=400) == (400, None)


def test_no_spike_cap_without_max_growth(clock):
    """The guard is off unless `spike.max_growth` is set."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes)
    assert send_until_held(gov, "acme.fr", limit=400) == (400, None)


def test_the_warmup_cap_applies_instead_of_the_spike_guard_during_warmup(clock):
    """Still inside the schedule, the day's cap is the warm-up step, not the spike cap."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0},
                   warmup={"schedule": [1000] * 20})
    assert gov.status("acme.fr")["cap"] == 1000
    assert gov.status("acme.fr")["cap_reason"] == "warmup"


def test_a_message_larger_than_the_spike_cap_leaves_at_each_days_cap(clock):
    """Nothing sent yet today and a 1000-recipient message: 200 go (2.0 x 100), the rest is
    held until midnight; tomorrow's cap counts today's 200 in its average (2.0 x 800 / 7)."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    grant = send(gov, "acme.fr", 1000)
    assert grant.count == 200
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.SPIKE)
    clock.t = TOMORROW
    grant = send(gov, "acme.fr", 800)
    assert (grant.count, grant.hold.reason) == (228, HoldReason.SPIKE)


# --- domains ----------------------------------------------------------------------------

def test_domains_are_governed_independently(clock):
    """acme.fr at its warm-up cap and its rate does not hold other.fr."""
    gov = governor(clock, domain_rate={"default": "2/h"}, **WARMUP)
    assert send_until_held(gov, "acme.fr")[0] == 2
    clock.t += 3600
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.WARMUP)
    assert send_until_held(gov, "other.fr")[0] == 2
    assert gov.status("other.fr")["today"] == 2
    assert gov.status("acme.fr")["today"] == 2


def test_domains_warm_up_from_their_own_first_delivery(clock):
    """acme.fr started yesterday (day 1, cap 4); other.fr starts today (day 0, cap 2)."""
    gov = governor(clock, {"acme.fr": TEN_AM - DAY}, {("acme.fr", TODAY - 1): 2}, **WARMUP)
    assert send_until_held(gov, "acme.fr")[0] == 4
    assert send_until_held(gov, "other.fr")[0] == 2


# --- pauses -----------------------------------------------------------------------------

def test_a_paused_domain_waits_whatever_its_limits(clock):
    """`relay domains pause`: acme.fr is held for "paused" and looked at again shortly;
    other domains are not; after resume it goes again."""
    gov = governor(clock)
    gov.set_paused({"acme.fr": ("all", "complaints")})
    grant = gov.reserve("acme.fr", 1)
    assert grant.count == 0
    assert (grant.hold.reason, grant.hold.detail) == (HoldReason.PAUSED, "complaints")
    assert TEN_AM < grant.hold.until <= TEN_AM + 3600
    assert gov.reserve("other.fr", 1) == Grant(1, None)
    assert gov.status("acme.fr")["state"] == "paused (all)"
    gov.set_paused({})
    assert gov.reserve("acme.fr", 1) == Grant(1, None)
    assert gov.status("acme.fr")["state"] == "active"


def test_a_paused_domain_is_granted_nothing_of_a_large_message(clock):
    """A pause holds every recipient, not what is over some limit: nothing is counted."""
    gov = governor(clock, domain_rate={"default": "10/min"})
    gov.set_paused({"acme.fr": ("all", "paused by the operator")})
    assert is_held(gov.reserve("acme.fr", 500), HoldReason.PAUSED)
    gov.set_paused({})
    assert gov.reserve("acme.fr", 500).count == 10


# --- status -----------------------------------------------------------------------------

def test_status_of_a_domain_in_warmup(clock):
    """warm-up day, today's volume, the cap that applies and why, the configured rate."""
    gov = governor(clock, domain_rate={"default": "10/min", "acme.fr": "5/s"}, **WARMUP)
    send(gov, "acme.fr")
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 0, "today": 1, "cap": 2,
                                     "cap_reason": "warmup", "next_release": None, "rate": "5/s"}
    send(gov, "acme.fr")
    assert gov.status("acme.fr")["next_release"] == TOMORROW      # the cap is reached
    clock.t += DAY
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 1, "today": 0, "cap": 4,
                                     "cap_reason": "warmup", "next_release": None, "rate": "5/s"}


def test_status_of_a_domain_never_seen(clock):
    """No delivery yet: day 0, nothing sent, the first step; the default rate."""
    gov = governor(clock, domain_rate={"default": "10/min"}, **WARMUP)
    assert gov.status("new.fr") == {"state": "active", "warmup_day": 0, "today": 0, "cap": 2,
                                    "cap_reason": "warmup", "next_release": None, "rate": "10/min"}


def test_status_past_warmup_without_spike_guard(clock):
    """Warmed up and no spike guard: no cap and no cap reason; no rate configured."""
    gov = governor(clock, {"acme.fr": TEN_AM - 5 * DAY}, {("acme.fr", TODAY): 7}, **WARMUP)
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 5, "today": 7, "cap": None,
                                     "cap_reason": None, "next_release": None, "rate": None}


def test_status_under_the_spike_guard(clock):
    """Warmed up with 7 days of 100/day and max_growth 2.0: cap 200 for "spike"."""
    first, volumes = spike_history([100] * 7)
    volumes[("acme.fr", TODAY)] = 42
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0}, **WARMUP)
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 10, "today": 42, "cap": 200,
                                     "cap_reason": "spike", "next_release": None, "rate": None}


# --- bulk pacing and pauses -------------------------------------------------------------

def test_bulk_mail_is_paced_at_bulk_rate_and_transactional_is_not(clock):
    """Bulk recipients go at limits.bulk.rate; the next waits for the window to move, while
    transactional mail of the same domain is still granted."""
    gov = governor(clock, bulk={"rate": "2/min"})
    for _ in range(2):
        assert gov.reserve("acme.fr", 1, bulk=True) == Grant(1, None)
    grant = gov.reserve("acme.fr", 1, bulk=True)
    assert grant == Grant(0, Hold(TEN_AM + 60, HoldReason.BULK, "bulk.rate 2/min"))
    assert gov.reserve("acme.fr", 1) == Grant(1, None)      # a password reset goes at once
    clock.t += 60
    assert gov.reserve("acme.fr", 1, bulk=True) == Grant(1, None)


def test_a_large_bulk_message_leaves_at_the_bulk_pace(clock):
    """bulk.rate 60/min and one message to 200 recipients: 60 now, and the rest when the
    window frees, 60 a minute; the pace holds within the message, not only between them."""
    gov = governor(clock, bulk={"rate": "60/min"})
    grant = send(gov, "acme.fr", 200, bulk=True)
    assert grant == Grant(60, Hold(TEN_AM + 60, HoldReason.BULK, "bulk.rate 60/min"))
    clock.t = TEN_AM + 30
    assert is_held(gov.reserve("acme.fr", 140, bulk=True), HoldReason.BULK)
    clock.t = TEN_AM + 60
    grant = send(gov, "acme.fr", 140, bulk=True)
    assert (grant.count, grant.hold.until) == (60, TEN_AM + 120)
    clock.t = TEN_AM + 120
    assert send(gov, "acme.fr", 80, bulk=True).count == 60
    clock.t = TEN_AM + 180
    assert send(gov, "acme.fr", 20, bulk=True) == Grant(20, None)


def test_a_large_bulk_message_in_the_line_leaves_at_the_bulk_pace(clock):
    """The same message as the delivery pipeline asks for it, with its ticket: each hold
    is when the window frees, so its 200 recipients leave in 4 windows: 60 a minute."""
    gov = governor(clock, bulk={"rate": "60/min"})
    left, granted = 200, []
    while left:
        grant = gov.reserve("acme.fr", left, bulk=True, ticket="news")
        gov.delivered("acme.fr", grant.count, grant.count)
        granted.append((clock.t - TEN_AM, grant.count))
        left -= grant.count
        if grant.hold:
            clock.t = grant.hold.until
    assert granted == [(0, 60), (60, 60), (120, 60), (180, 20)]


def test_a_paused_domain_is_held_and_resumes(clock):
    """`relay domains pause` holds every message of the domain, rechecked periodically."""
    gov = governor(clock)
    gov.set_paused({"acme.fr": ("all", "paused by the operator")})
    grant = gov.reserve("acme.fr", 1)
    assert is_held(grant, HoldReason.PAUSED) and grant.hold.until > clock.t
    assert gov.reserve("other.fr", 1) == Grant(1, None)
    gov.set_paused({})
    assert gov.reserve("acme.fr", 1) == Grant(1, None)


def test_a_bulk_pause_holds_only_bulk_mail(clock):
    """The reputation rules' `pause_bulk`: newsletters wait, invoices still go."""
    gov = governor(clock)
    gov.set_paused({"acme.fr": ("bulk", "complaint rate 0.12% (above limit)")})
    assert gov.reserve("acme.fr", 1) == Grant(1, None)
    assert is_held(gov.reserve("acme.fr", 1, bulk=True), HoldReason.PAUSED)
    assert gov.status("acme.fr")["state"] == "paused (bulk)"


def test_attempts_in_flight_count_against_the_daily_cap(clock):
    """Parallel workers: recipients granted but not yet answered count toward the cap, so
    four workers cannot all pass a cap with room for one more."""
    gov = governor(clock, warmup={"schedule": [3]})
    send(gov, "acme.fr")                                   # 1 delivered today
    assert gov.reserve("acme.fr", 1) == Grant(1, None)     # 2 in all, one still in flight
    assert gov.reserve("acme.fr", 1) == Grant(1, None)     # 3: the cap, with 2 in flight
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.WARMUP)
    gov.delivered("acme.fr", 0, attempted=1)               # one of them failed: room again
    assert gov.reserve("acme.fr", 1) == Grant(1, None)


def test_a_grant_gets_what_the_cap_leaves_after_those_in_flight(clock):
    """Cap 10 and 6 recipients granted to another worker, not yet answered: a 6-recipient
    message gets the 4 left; when the first attempt delivers only 5, one more fits."""
    gov = governor(clock, warmup={"schedule": [10]})
    assert gov.reserve("acme.fr", 6) == Grant(6, None)
    grant = gov.reserve("acme.fr", 6)
    assert (grant.count, grant.hold.reason, grant.hold.until) == (4, HoldReason.WARMUP, TOMORROW)
    gov.delivered("acme.fr", 5, attempted=6)
    gov.delivered("acme.fr", 4, attempted=4)
    assert gov.reserve("acme.fr", 2).count == 1


# --- the transactional reserve ------------------------------------------------------------

def test_bulk_leaves_the_reserve_of_the_warmup_cap_to_transactional_mail(clock):
    """Day 0 caps 50 recipients: bulk stops at 40 (80%), password resets still get the last
    10, and tomorrow bulk goes on."""
    gov = governor(clock, warmup={"schedule": [50, 100]}, bulk={"rate": "1000/min"})
    sent, hold = send_until_held(gov, "acme.fr", bulk=True)
    assert sent == 40
    assert hold.reason is HoldReason.WARMUP and hold.until == TOMORROW
    assert "bulk's 80%" in hold.detail
    assert send_until_held(gov, "acme.fr") == (10, Hold(TOMORROW, HoldReason.WARMUP,
                                                        "warmup cap 50/day reached (50 sent)"))
    clock.t = TOMORROW
    assert send(gov, "acme.fr", bulk=True) == Grant(1, None)


def test_bulk_mail_alone_starts_a_warmup_whose_first_step_is_below_its_share(clock):
    """schedule [1, 10] and only bulk mail: 80% of 1 is still 1 (as bulk's share of a rate is
    never 0), so the warm-up starts (day 0 is the day of the first delivery, and a domain that
    delivered nothing would wait on day 0 forever) and the 5 recipients have left by day 1."""
    gov = governor(clock, warmup={"schedule": [1, 10]}, bulk={"rate": "1000/min"})
    left = 5
    for day in range(3):
        clock.t = TEN_AM + day * DAY
        left -= send(gov, "acme.fr", left, bulk=True).count if left else 0
    assert left == 0


def test_a_large_bulk_message_gets_only_bulks_share_of_the_cap(clock):
    """Day 0 caps 50: a 200-recipient newsletter gets 40 and is held until midnight; a
    password reset after it still goes."""
    gov = governor(clock, warmup={"schedule": [50]}, bulk={"rate": "1000/min"})
    grant = send(gov, "acme.fr", 200, bulk=True)
    assert (grant.count, grant.hold.reason, grant.hold.until) == (40, HoldReason.WARMUP, TOMORROW)
    assert send(gov, "acme.fr") == Grant(1, None)


def test_bulk_leaves_the_reserve_of_the_domain_rate_to_transactional_mail(clock):
    """domain_rate 10/min: bulk may fill 8 of the window; transactional mail the other 2."""
    gov = governor(clock, domain_rate={"default": "10/min"}, bulk={"rate": "1000/min"})
    grant = send(gov, "acme.fr", 20, bulk=True)
    assert grant == Grant(8, Hold(TEN_AM + 60, HoldReason.RATE, "domain_rate 10/min (bulk's 80%)"))
    assert send_until_held(gov, "acme.fr")[0] == 2


def test_a_zero_reserve_lets_bulk_use_the_whole_cap(clock):
    gov = governor(clock, warmup={"schedule": [50]}, bulk={"rate": "1000/min", "reserve": "0%"})
    assert send_until_held(gov, "acme.fr", bulk=True)[0] == 50


def test_the_reserve_must_leave_bulk_something():
    with pytest.raises(ValueError, match="below 100%"):
        limits(bulk={"reserve": "100%"})


def test_the_rate_windows_carry_over_to_the_next_governor(clock):
    """A reload replaces the delivery process: the new governor starts from the old one's
    windows (saved in the spool), so 2/h stays 2/h across it; windows of rates no longer in
    use past their longest period are not carried."""
    gov = governor(clock, domain_rate={"default": "2/h"})
    assert send(gov, "acme.fr", 2).count == 2
    saved = gov.export_windows()
    after = Governor(limits(domain_rate={"default": "2/h"}), clock, {}, {}, saved)
    grant = after.reserve("acme.fr", 1)
    assert is_held(grant, HoldReason.RATE) and grant.hold.until == TEN_AM + 3600
    clock.t += 3601
    assert gov.export_windows() == {}


# --- the line: a held backlog comes due at the pace of the rate ----------------------------

def test_a_held_backlog_gets_one_slot_each_at_the_pace_of_the_rate(clock):
    """60/min, a full window, 100 more bulk messages: each is held once, to its own slot one
    second after the one before (not all to the same instant, to be held again but one), and
    each is granted when it comes back at its slot, a little late as the scheduler is (or,
    when the send of a minute before still counts to the end of its 1/1000 of the window,
    that fraction of a second later)."""
    gov = governor(clock, bulk={"rate": "60/min"})
    assert send(gov, "acme.fr", 60, bulk=True).count == 60
    grants = [gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}") for k in range(100)]
    assert {g.count for g in grants} == {0}
    assert all(on_time(g.hold.until, TEN_AM + 60 + k) for k, g in enumerate(grants))
    assert {g.hold.reason for g in grants} == {HoldReason.BULK}
    for k, grant in enumerate(grants):
        clock.t = grant.hold.until + 0.3
        back = gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}")
        if back.count == 0:
            assert back.hold.until - clock.t <= 60 / GRANULARITY, k
            clock.t = back.hold.until
            back = gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}")
        assert back == Grant(1, None), k


def test_a_message_whose_window_is_still_full_at_its_slot_keeps_its_place(clock):
    """Scheduling jitter: sends recorded a little after their slots can leave the window full
    when a later message's slot comes. It waits for the window only (a fraction of a second),
    not behind the whole line."""
    gov = governor(clock, bulk={"rate": "2/min"})
    assert gov.reserve("acme.fr", 2, bulk=True).count == 2   # the window is full until 10:01
    slots = [gov.reserve("acme.fr", 1, bulk=True, ticket=t).hold.until for t in "abcd"]
    assert slots == [TEN_AM + 60, TEN_AM + 90, TEN_AM + 120, TEN_AM + 150]
    for ticket, slot in (("a", 60), ("b", 90)):              # each sent 0.4 s after its slot
        clock.t = TEN_AM + slot + 0.4
        assert gov.reserve("acme.fr", 1, bulk=True, ticket=ticket) == Grant(1, None)
    clock.t = TEN_AM + 120                                   # c on time: a and b still count
    again = gov.reserve("acme.fr", 1, bulk=True, ticket="c")
    assert again.count == 0
    assert on_time(again.hold.until, TEN_AM + 120.4)         # the window, not the line's end
    clock.t = again.hold.until
    assert gov.reserve("acme.fr", 1, bulk=True, ticket="c") == Grant(1, None)


def test_a_newcomer_queues_behind_the_held_backlog(clock):
    """Ten messages hold slots until 10:01:10: one arriving at 10:01:05 finds room in the
    window but goes behind them, not before."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    for k in range(10):
        gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}")
    clock.t += 65                                            # the window has room again...
    late = gov.reserve("acme.fr", 1, bulk=True, ticket="late")
    assert late.count == 0 and late.hold.until == TEN_AM + 70   # ...but ten are ahead of it


def test_a_newcomer_behind_the_line_is_granted_nothing_of_a_large_message(clock):
    """A 50-recipient newcomer behind held mail takes a slot for all 50 and none of the
    window's room: the held messages' turns are not eaten by a message that came later."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    for k in range(10):
        gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}")
    clock.t += 65
    assert gov.reserve("acme.fr", 50, bulk=True, ticket="big") == Grant(
        0, Hold(TEN_AM + 70, HoldReason.BULK, "bulk.rate 60/min"))
    assert gov.reserve("acme.fr", 1, bulk=True, ticket="next").hold.until == TEN_AM + 120


def test_the_line_spaces_bulk_at_its_share_of_a_slower_domain_rate(clock):
    """domain_rate 100/h binds bulk (80 of them an hour) before bulk.rate 600/min does: the
    slots are 45 s apart."""
    gov = governor(clock, domain_rate={"default": "100/h"}, bulk={"rate": "600/min"})
    assert gov.reserve("acme.fr", 80, bulk=True).count == 80
    grants = [gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}") for k in range(3)]
    assert [g.hold.reason for g in grants] == [HoldReason.RATE] * 3
    assert [g.hold.until - grants[0].hold.until for g in grants] == [0, 45, 90]


def test_transactional_mail_is_not_behind_the_bulk_line(clock):
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    assert gov.reserve("acme.fr", 1, bulk=True, ticket="news").count == 0
    assert gov.reserve("acme.fr", 1, ticket="reset") == Grant(1, None)


def test_a_line_whose_messages_never_come_back_is_dropped(clock):
    """The held backlog was deleted (`relay queue delete`): once the first slot still owed is
    two minutes late, new mail no longer waits behind slots nobody will use."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    for k in range(600):                                     # ten minutes of slots
        gov.reserve("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 60 + 119                              # the first slot, 119 s late
    assert gov.reserve("acme.fr", 1, bulk=True, ticket="new").hold.until == TEN_AM + 660
    clock.t = TEN_AM + 60 + 121
    assert gov.reserve("acme.fr", 1, bulk=True, ticket="newer") == Grant(1, None)


def test_transactional_mail_inside_the_reserve_does_not_slow_the_bulk_line(clock):
    """domain_rate 10/min: bulk has its own 8; a password reset uses the reserve, and the bulk
    line still gets its 8 (the whole rate is the only other limit)."""
    gov = governor(clock, domain_rate={"default": "10/min"}, bulk={"rate": "1000/min"})
    assert send(gov, "acme.fr", 2) == Grant(2, None)         # transactional: the reserve
    assert send(gov, "acme.fr", 8, bulk=True) == Grant(8, None)
    assert gov.reserve("acme.fr", 1, bulk=True).count == 0   # bulk's 8 are used
    assert gov.reserve("acme.fr", 1).count == 0              # and 10 in all


def test_messages_held_again_at_their_turn_get_slots_of_their_own(clock):
    """Three messages whose slots came while the window was full (other mail used it) are not
    all held to the same instant: each gets its own slot from the head of the line."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    slots = [gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}").hold.until for k in range(3)]
    assert slots == [TEN_AM + 60, TEN_AM + 61, TEN_AM + 62]
    clock.t = TEN_AM + 62
    assert gov.reserve("acme.fr", 60, bulk=True).count == 60   # someone else took the window
    again = [gov.reserve("acme.fr", 1, bulk=True, ticket=f"m{k}").hold.until for k in range(3)]
    assert on_time(again[0], TEN_AM + 122)
    assert [slot - again[0] for slot in again] == pytest.approx([0, 1, 2])


def test_a_full_window_does_not_queue_new_mail_behind_a_deleted_backlog(clock):
    """The backlog's slots are never used (deleted) and the window is full again when a new
    campaign arrives: it gets the window's next room, not a slot after the deleted backlog."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    for k in range(3000):                                    # fifty minutes of slots
        gov.reserve("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 400
    assert gov.reserve("acme.fr", 60, bulk=True).count == 60   # a new campaign's first window
    assert on_time(gov.reserve("acme.fr", 1, bulk=True, ticket="new").hold.until, TEN_AM + 460)


def test_sweep_names_the_domains_whose_line_stopped_moving(clock):
    """The delivery process sweeps every few seconds: a line whose first owed message is two
    minutes late is dropped and its domain named once, so the mail slotted behind the deleted
    backlog is looked at again instead of waiting for slots nobody will use."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.reserve("acme.fr", 60, bulk=True)
    for k in range(300):                                     # slots until 10:06
        gov.reserve("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 60 + 100
    assert gov.sweep() == set()                              # late, but not two minutes
    clock.t = TEN_AM + 60 + 121
    assert gov.sweep() == {"acme.fr"}
    assert gov.sweep() == set()


# --- daily caps per mailbox provider ------------------------------------------------------

PER_PROVIDER = {"warmup": {"schedule": [2, 4, 6], "per_provider": True}}


def send_by_provider(gov: Governor, domain: str, asked: dict[str, int],
                     bulk: bool = False) -> Grant:
    """What the delivery pipeline does when caps are per provider: reserve the recipients
    counted per provider (in the message's order), send each provider's granted ones, and
    report them all delivered, provider by provider."""
    grant = gov.reserve(domain, asked, bulk)
    for provider, n in grant.by_provider.items():
        if n:
            gov.delivered(domain, n, n, provider)
    return grant


def test_each_provider_has_its_own_warmup_cap(clock):
    """Day 0 of [2, 4, 6] per provider: Gmail's cap reached holds Gmail's next recipient
    until midnight, and Outlook still gets its own 2."""
    gov = governor(clock, **PER_PROVIDER)
    assert send_by_provider(gov, "acme.fr", {"google": 2}) == Grant(2, None, {"google": 2})
    assert gov.reserve("acme.fr", {"google": 1}) == Grant(0, Hold(
        TOMORROW, HoldReason.WARMUP, "warmup cap 2/day to google reached (2 sent)"), {"google": 0})
    assert send_by_provider(gov, "acme.fr", {"microsoft": 2}) == Grant(2, None, {"microsoft": 2})
    assert is_held(gov.reserve("acme.fr", {"microsoft": 1}), HoldReason.WARMUP)


def test_a_mixed_message_gets_what_each_providers_cap_leaves_the_rest_waits_for_midnight(clock):
    """Gmail has 1 left of its 2: a message to 3 at Gmail, 1 at Outlook and 4 elsewhere gets
    1 + 1 + 2 now; the other 4 are held until midnight for the warm-up (no rate binds), and
    day 1 carries them."""
    gov = governor(clock, **PER_PROVIDER)
    send_by_provider(gov, "acme.fr", {"google": 1})
    grant = send_by_provider(gov, "acme.fr", {"google": 3, "microsoft": 1, "other": 4})
    assert (grant.count, grant.by_provider) == (4, {"google": 1, "microsoft": 1, "other": 2})
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
    clock.t = TOMORROW
    assert send_by_provider(gov, "acme.fr", {"google": 2, "other": 2}) == Grant(
        4, None, {"google": 2, "other": 2})


def test_a_mixed_message_is_held_for_the_rate_while_a_provider_it_stopped_has_cap_room(clock):
    """domain_rate 5/min is the domain's, whatever the providers, and goes to them in the
    message's order: 4 at Gmail and 4 at Outlook, caps of 3: Gmail gets its 3, Outlook the 2
    the rate has left, and the rest waits for the window (Outlook still has room today). A
    minute later Outlook's last room goes and the rest waits for midnight."""
    gov = governor(clock, domain_rate={"default": "5/min"},
                   warmup={"schedule": [3], "per_provider": True})
    grant = send_by_provider(gov, "acme.fr", {"google": 4, "microsoft": 4})
    assert grant == Grant(5, Hold(TEN_AM + 60, HoldReason.RATE, "domain_rate 5/min"),
                          {"google": 3, "microsoft": 2})
    clock.t = TEN_AM + 60
    grant = send_by_provider(gov, "acme.fr", {"google": 1, "microsoft": 2})
    assert (grant.count, grant.by_provider) == (1, {"google": 0, "microsoft": 1})
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)


def test_recipients_in_flight_count_against_their_providers_cap_only(clock):
    """Parallel workers: Gmail's 2 granted but not yet answered fill Gmail's cap, not
    Outlook's; when they fail, Gmail has room again."""
    gov = governor(clock, **PER_PROVIDER)
    assert gov.reserve("acme.fr", {"google": 2}).count == 2
    assert is_held(gov.reserve("acme.fr", {"google": 1}), HoldReason.WARMUP)
    assert gov.reserve("acme.fr", {"microsoft": 1}) == Grant(1, None, {"microsoft": 1})
    gov.delivered("acme.fr", 0, attempted=2, provider="google")
    assert gov.reserve("acme.fr", {"google": 1}) == Grant(1, None, {"google": 1})


def test_status_and_ramps_per_provider(clock):
    """`relay domains show`: each provider's ramp apart (a provider without one is on day 0
    with nothing sent); `ramps` lists those the domain has; the whole domain's ramp is not
    used when caps are per provider."""
    gov = governor(clock, domain_rate={"default": "10/min"}, **PER_PROVIDER)
    send_by_provider(gov, "acme.fr", {"google": 2, "other": 1})
    assert gov.ramps("acme.fr") == ["google", "other"]
    assert gov.status("acme.fr", "google") == {
        "state": "active", "warmup_day": 0, "today": 2, "cap": 2, "cap_reason": "warmup",
        "next_release": TOMORROW, "rate": "10/min"}
    assert gov.status("acme.fr", "other")["today"] == 1
    assert gov.status("acme.fr", "microsoft") == {
        "state": "active", "warmup_day": 0, "today": 0, "cap": 2, "cap_reason": "warmup",
        "next_release": None, "rate": "10/min"}
    assert gov.status("acme.fr")["today"] == 0
    assert gov.ramps("other.fr") == []
    clock.t = TOMORROW
    assert gov.status("acme.fr", "google")["warmup_day"] == 1


def test_the_ramps_of_a_domain_whose_caps_are_not_per_provider(clock):
    """`per_provider: false`: the domain has one ramp, its own (WHOLE), and a count asked
    gets a grant without parts."""
    gov = governor(clock, warmup={"schedule": [2], "per_provider": False})
    assert send(gov, "acme.fr") == Grant(1, None, None)
    assert gov.ramps("acme.fr") == [WHOLE]


def test_each_provider_warms_up_from_its_own_first_delivery(clock):
    """Gmail first delivered yesterday (day 1, cap 4); Outlook's first is today (day 0,
    cap 2)."""
    gov = governor(clock, {ramp("acme.fr", "google"): TEN_AM - DAY},
                   {(ramp("acme.fr", "google"), TODAY - 1): 2}, **PER_PROVIDER)
    grant = send_by_provider(gov, "acme.fr", {"microsoft": 5, "google": 5})
    assert grant.by_provider == {"microsoft": 2, "google": 4}
    assert [gov.warmup_day("acme.fr", TODAY, p) for p in ("google", "microsoft")] == [1, 0]


def test_the_spike_guard_looks_at_each_providers_own_history(clock):
    """7 days of 100/day to Gmail and max_growth 2.0: Gmail's day is capped at 200;
    Outlook, with no history, is not capped."""
    volumes = {(ramp("acme.fr", "google"), TODAY - i): 100 for i in range(1, 8)}
    gov = governor(clock, {ramp("acme.fr", "google"): TEN_AM - 10 * DAY}, volumes,
                   spike={"max_growth": 2.0})
    grant = send_by_provider(gov, "acme.fr", {"google": 300, "microsoft": 300})
    assert grant.by_provider == {"google": 200, "microsoft": 300}
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.SPIKE)
    assert "to google" in grant.hold.detail


def test_a_restart_keeps_each_providers_ramp(clock):
    """The spool keeps volumes and first sends per (domain, provider): after a restart Gmail
    is on day 1 with 3 of its 4 sent, Outlook on day 0 with 1 of its 2."""
    persisted = SpoolState()
    state.add_deliveries(persisted.conn, "acme.fr", 2, TEN_AM - DAY, "google")
    state.add_deliveries(persisted.conn, "acme.fr", 3, TEN_AM, "google")
    state.add_deliveries(persisted.conn, "acme.fr", 1, TEN_AM, "microsoft")
    first_send, volumes = persisted.load(clock.now())
    gov = Governor(limits(**PER_PROVIDER), clock, first_send, volumes)
    assert gov.ramps("acme.fr") == ["google", "microsoft"]
    grant = gov.reserve("acme.fr", {"google": 2, "microsoft": 2})
    assert (grant.count, grant.by_provider) == (2, {"google": 1, "microsoft": 1})
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)


def test_a_paused_domain_grants_nothing_to_any_provider(clock):
    """A pause holds every recipient of every provider and counts nothing; a bulk pause
    holds bulk mail only."""
    gov = governor(clock, **PER_PROVIDER)
    gov.set_paused({"acme.fr": ("all", "paused by the operator")})
    grant = gov.reserve("acme.fr", {"google": 2, "microsoft": 1})
    assert is_held(grant, HoldReason.PAUSED)
    assert [grant.by_provider.get(p, 0) for p in ("google", "microsoft")] == [0, 0]
    assert gov.status("acme.fr", "google")["today"] == 0
    gov.set_paused({"acme.fr": ("bulk", "complaint rate 0.12% (above limit)")})
    assert is_held(gov.reserve("acme.fr", {"google": 1}, bulk=True), HoldReason.PAUSED)
    assert send_by_provider(gov, "acme.fr", {"google": 2, "microsoft": 1}) == Grant(
        3, None, {"google": 2, "microsoft": 1})


# --- healthy days: the warm-up moves on only on days that counted ---------------------------

def test_an_unhealthy_day_does_not_move_the_warmup_on(clock):
    """First delivery two days ago, yesterday unhealthy (paused, or over a reputation limit):
    today is warm-up day 1 (cap 4), not 2."""
    gov = Governor(limits(**WARMUP), clock, {"acme.fr": TEN_AM - 2 * DAY}, {}, None,
                   {"acme.fr": {TODAY - 1}})
    assert gov.status("acme.fr")["warmup_day"] == 1
    assert send_until_held(gov, "acme.fr") == (4, Hold(
        TOMORROW, HoldReason.WARMUP, "warmup cap 4/day reached (4 sent)"))
    assert gov.status("other.fr")["warmup_day"] == 0


def test_set_unhealthy_changes_the_warmup_day_at_once(clock):
    """The refresh reads feedback that arrived for past days: with the first day unhealthy
    too, today is day 0 and the 4 sent already fill its cap of 2; with no unhealthy day at
    all, today is day 2 (cap 6) and 2 more go. Today marked unhealthy changes today nothing
    (today is not counted yet); tomorrow it is not counted."""
    gov = Governor(limits(**WARMUP), clock, {"acme.fr": TEN_AM - 2 * DAY}, {}, None,
                   {"acme.fr": {TODAY - 1}})
    assert send_until_held(gov, "acme.fr")[0] == 4
    gov.set_unhealthy({"acme.fr": {TODAY - 2, TODAY - 1}})
    assert gov.status("acme.fr")["warmup_day"] == 0
    assert is_held(gov.reserve("acme.fr", 1), HoldReason.WARMUP)
    gov.set_unhealthy({})
    assert gov.status("acme.fr")["warmup_day"] == 2
    assert send_until_held(gov, "acme.fr")[0] == 2
    gov.set_unhealthy({"acme.fr": {TODAY}})
    assert gov.status("acme.fr")["warmup_day"] == 2
    clock.t = TOMORROW
    assert gov.status("acme.fr")["warmup_day"] == 2
    assert send_until_held(gov, "acme.fr")[0] == 6


def test_an_unhealthy_day_holds_back_every_providers_ramp(clock):
    """Unhealthy days are the domain's: yesterday unhealthy, Gmail (first delivery two days
    ago) is on day 1 and Outlook (yesterday) on day 0."""
    first = {ramp("acme.fr", "google"): TEN_AM - 2 * DAY,
             ramp("acme.fr", "microsoft"): TEN_AM - DAY}
    gov = Governor(limits(**PER_PROVIDER), clock, first, {}, None, {"acme.fr": {TODAY - 1}})
    assert [gov.status("acme.fr", p)["warmup_day"] for p in ("google", "microsoft")] == [1, 0]
    grant = send_by_provider(gov, "acme.fr", {"google": 9, "microsoft": 9})
    assert grant.by_provider == {"google": 4, "microsoft": 2}
    gov.set_unhealthy({})
    assert [gov.status("acme.fr", p)["warmup_day"] for p in ("google", "microsoft")] == [2, 1]


def test_a_domain_warmed_up_before_caps_were_per_provider_keeps_its_day(clock):
    """A domain ramped as a whole (before per_provider, or with it off) for two days: once its
    caps are per provider, each provider continues at day 2, not 0; a provider that has a
    ramp of its own follows its own."""
    first_send = {"acme.fr": TEN_AM - 2 * DAY, ramp("acme.fr", "yahoo"): TEN_AM}
    gov = governor(clock, first_send, warmup={"schedule": [2, 4, 6, 8]})
    assert gov.status("acme.fr", "google")["warmup_day"] == 2
    assert gov.reserve("acme.fr", {"google": 7, "yahoo": 7}).by_provider == {"google": 6, "yahoo": 2}
    gov.delivered("acme.fr", 6, 6, "google")            # google's own ramp begins: still day 2
    assert gov.status("acme.fr", "google")["warmup_day"] == 2

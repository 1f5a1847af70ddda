"""relay.governor.governor: may a domain send n more recipients now, or must it wait until T?

Time is a FakeClock set by hand; nothing sleeps. The clock starts at 10:00 UTC on a day
`TODAY`, so "the next UTC midnight" (`TOMORROW`) is unambiguous. Deliveries are counted with
`delivered()`, as the delivery pipeline does after each attempt; a restart is a new Governor
built from the state the spool loads (`relay.state.sqlite.load`).
"""
from __future__ import annotations

import sqlite3

import pytest

from relay.config import Limits
from relay.governor.governor import Governor, Hold, HoldReason
from relay.governor.warmup import SPIKE_DAYS
from relay.state import sqlite as state
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


def send(gov: Governor, domain: str, recipients: int = 1) -> Hold | None:
    """What the delivery pipeline does: ask; when admitted, send and count them delivered."""
    hold = gov.admit(domain, recipients)
    if hold is None:
        gov.sending(domain, recipients)
        gov.delivered(domain, recipients)
    return hold


def send_until_held(gov: Governor, domain: str, limit: int = 1000) -> tuple[int, Hold | None]:
    """Single-recipient messages until one is held: (how many went, the hold)."""
    for sent in range(limit):
        hold = send(gov, domain)
        if hold is not None:
            return sent, hold
    return limit, None


# --- no limits --------------------------------------------------------------------------

def test_without_limits_everything_is_admitted(clock):
    """No domain_rate, no warm-up, no spike guard: nothing is ever held."""
    gov = governor(clock)
    assert send_until_held(gov, "acme.fr", limit=500) == (500, None)
    assert gov.admit("acme.fr", 10_000) is None


# --- domain_rate ----------------------------------------------------------------------

def test_default_rate_holds_the_message_that_would_exceed_it(clock):
    """default 2/min: two sends go, the third is held for "rate" until the first is a
    minute old."""
    gov = governor(clock, domain_rate={"default": "2/min"})
    assert send(gov, "acme.fr") is None
    clock.t += 10
    assert send(gov, "acme.fr") is None
    clock.t += 10
    hold = gov.admit("acme.fr", 1)
    assert hold == Hold(TEN_AM + 60, HoldReason.RATE, "domain_rate 2/min")
    clock.t = TEN_AM + 59.5
    assert gov.admit("acme.fr", 1).until == TEN_AM + 60
    clock.t = TEN_AM + 60
    assert gov.admit("acme.fr", 1) is None


def test_a_domains_own_rate_replaces_the_default(clock):
    """acme.fr: 1/h overrides default 100/min; other domains get the default."""
    gov = governor(clock, domain_rate={"default": "100/min", "acme.fr": "1/h"})
    assert send(gov, "acme.fr") is None
    hold = gov.admit("acme.fr", 1)
    assert (hold.until, hold.reason, hold.detail) == (TEN_AM + 3600, HoldReason.RATE, "domain_rate 1/h")
    assert send_until_held(gov, "other.fr")[0] == 100


def test_a_domain_without_a_rate_and_no_default_is_not_rate_limited(clock):
    """domain_rate names acme.fr only: other.fr has no rate limit."""
    gov = governor(clock, domain_rate={"acme.fr": "1/h"})
    assert send(gov, "acme.fr") is None
    assert gov.admit("acme.fr", 1) is not None
    assert send_until_held(gov, "other.fr", limit=300) == (300, None)


def test_the_rate_counts_recipients_not_messages(clock):
    """5/min: a 3-recipient message then a 3-recipient message is 6: the second waits."""
    gov = governor(clock, domain_rate={"default": "5/min"})
    assert send(gov, "acme.fr", 3) is None
    assert gov.admit("acme.fr", 3).until == TEN_AM + 60
    assert gov.admit("acme.fr", 2) is None


def test_a_held_message_does_not_use_the_rate(clock):
    """Only what is sent (`sending`) counts; being asked and held costs nothing."""
    gov = governor(clock, domain_rate={"default": "1/min"})
    assert send(gov, "acme.fr") is None
    for _ in range(5):
        assert gov.admit("acme.fr", 1).until == TEN_AM + 60
    clock.t = TEN_AM + 60
    assert send(gov, "acme.fr") is None
    assert gov.admit("acme.fr", 1).until == TEN_AM + 120


def test_the_rate_counts_attempts_that_did_not_deliver(clock):
    """A recipient handed to the route counts against the rate even if it was deferred."""
    gov = governor(clock, domain_rate={"default": "1/min"})
    assert gov.admit("acme.fr", 1) is None
    gov.sending("acme.fr", 1)
    gov.delivered("acme.fr", 0)
    assert gov.admit("acme.fr", 1).reason is HoldReason.RATE


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


def test_the_first_message_of_the_day_is_always_admitted(clock):
    """A 5-recipient message on a day capped at 2 goes when it is the day's first; after it,
    nothing more that day."""
    gov = governor(clock, **WARMUP)
    assert send(gov, "acme.fr", 5) is None
    hold = gov.admit("acme.fr", 1)
    assert (hold.until, hold.reason) == (TOMORROW, HoldReason.WARMUP)


def test_a_message_is_held_if_its_recipients_would_exceed_the_cap(clock):
    """Cap 2, 1 delivered: a 2-recipient message is held, a 1-recipient message goes."""
    gov = governor(clock, **WARMUP)
    assert send(gov, "acme.fr") is None
    assert gov.admit("acme.fr", 2).reason is HoldReason.WARMUP
    assert gov.admit("acme.fr", 1) is None


def test_only_delivered_recipients_count_toward_the_cap(clock):
    """Attempts the provider deferred deliver nothing and use none of the day's cap."""
    gov = governor(clock, **WARMUP)
    for _ in range(5):
        assert gov.admit("acme.fr", 1) is None
        gov.sending("acme.fr", 1)
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
    assert gov.admit("acme.fr", 1) is None
    gov.sending("acme.fr", 1)
    gov.delivered("acme.fr", 0, attempted=1)   # what the pipeline reports for a 451
    clock.t += DAY
    assert gov.status("acme.fr")["warmup_day"] == 0
    assert send_until_held(gov, "acme.fr")[0] == 2


def test_an_empty_schedule_caps_nothing(clock):
    """warmup.schedule [] (the default): no warm-up cap, even on day 0."""
    gov = governor(clock, warmup={"schedule": []})
    assert send_until_held(gov, "acme.fr", limit=300) == (300, None)


def test_the_rate_is_checked_before_the_daily_cap(clock):
    """When both apply the rate hold (a short wait) is what is reported."""
    gov = governor(clock, domain_rate={"default": "2/min"}, **WARMUP)
    send(gov, "acme.fr")
    send(gov, "acme.fr")
    hold = gov.admit("acme.fr", 1)
    assert (hold.reason, hold.until) == (HoldReason.RATE, TEN_AM + 60)
    clock.t += 60
    assert gov.admit("acme.fr", 1).reason is HoldReason.WARMUP


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
        return state.load(self.conn, state.day_of(now) - SPIKE_DAYS - 1)


def test_a_restart_does_not_reset_todays_volume_or_the_warmup_day(clock):
    """Day 1 of [2, 4, 6] with 3 delivered before a restart: after it, one more goes and the
    next is held until midnight, exactly as without the restart."""
    persisted = SpoolState()
    before = governor(clock, **WARMUP)
    for day, count in ((0, 2), (1, 3)):
        clock.t = TEN_AM + day * DAY
        for _ in range(count):
            assert send(before, "acme.fr") is None
            persisted.add("acme.fr", 1, clock.now())
    status = before.status("acme.fr")

    first_send, volumes = persisted.load(clock.now())
    after = Governor(limits(**WARMUP), clock, first_send, volumes)
    assert after.status("acme.fr") == status == {
        "state": "active", "warmup_day": 1, "today": 3, "cap": 4, "cap_reason": "warmup",
        "rate": None}
    for gov in (before, after):
        assert gov.admit("acme.fr", 1) is None
        hold = gov.admit("acme.fr", 2)
        assert (hold.until, hold.reason) == (TOMORROW + DAY, HoldReason.WARMUP)
    assert send(after, "acme.fr") is None
    assert after.admit("acme.fr", 1).until == TOMORROW + DAY


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
    """7 days of 100/day and max_growth 2.0: today carries 200, the 201st is held for
    "spike" until midnight."""
    first, volumes = spike_history([100] * 7)
    volumes[("acme.fr", TODAY)] = 199
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0}, **WARMUP)
    assert gov.admit("acme.fr", 2).reason is HoldReason.SPIKE
    assert send(gov, "acme.fr") is None
    hold = gov.admit("acme.fr", 1)
    assert (hold.until, hold.reason) == (TOMORROW, HoldReason.SPIKE)
    assert "200/day" in hold.detail


def test_the_spike_cap_counted_from_deliveries(clock):
    """The same cap, reached one delivery at a time."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    assert send_until_held(gov, "acme.fr") == (200, gov.admit("acme.fr", 1))
    assert gov.admit("acme.fr", 1).reason is HoldReason.SPIKE


def test_quiet_days_count_as_zero_in_the_spike_average(clock):
    """5 days of 140 and 2 quiet days: average 100, cap 200."""
    first, volumes = spike_history([140, 0, 140, 140, 0, 140, 140])
    del volumes[("acme.fr", TODAY - 2)]      # a quiet day has no row at all
    volumes[("acme.fr", TODAY)] = 200
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    assert gov.admit("acme.fr", 1).reason is HoldReason.SPIKE
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


def test_the_first_message_of_the_day_passes_the_spike_guard(clock):
    """Nothing sent yet today: even 1000 recipients go; then the day is over."""
    first, volumes = spike_history([100] * 7)
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0})
    assert send(gov, "acme.fr", 1000) is None
    assert gov.admit("acme.fr", 1).reason is HoldReason.SPIKE


# --- domains ----------------------------------------------------------------------------

def test_domains_are_governed_independently(clock):
    """acme.fr at its warm-up cap and its rate does not hold other.fr."""
    gov = governor(clock, domain_rate={"default": "2/h"}, **WARMUP)
    assert send_until_held(gov, "acme.fr")[0] == 2
    clock.t += 3600
    assert gov.admit("acme.fr", 1).reason is HoldReason.WARMUP
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
    hold = gov.admit("acme.fr", 1)
    assert (hold.reason, hold.detail) == (HoldReason.PAUSED, "complaints")
    assert TEN_AM < hold.until <= TEN_AM + 3600
    assert gov.admit("other.fr", 1) is None
    assert gov.status("acme.fr")["state"] == "paused (all)"
    gov.set_paused({})
    assert gov.admit("acme.fr", 1) is None
    assert gov.status("acme.fr")["state"] == "active"


# --- status -----------------------------------------------------------------------------

def test_status_of_a_domain_in_warmup(clock):
    """warm-up day, today's volume, the cap that applies and why, the configured rate."""
    gov = governor(clock, domain_rate={"default": "10/min", "acme.fr": "5/s"}, **WARMUP)
    send(gov, "acme.fr")
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 0, "today": 1, "cap": 2,
                                     "cap_reason": "warmup", "rate": "5/s"}
    clock.t += DAY
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 1, "today": 0, "cap": 4,
                                     "cap_reason": "warmup", "rate": "5/s"}


def test_status_of_a_domain_never_seen(clock):
    """No delivery yet: day 0, nothing sent, the first step; the default rate."""
    gov = governor(clock, domain_rate={"default": "10/min"}, **WARMUP)
    assert gov.status("new.fr") == {"state": "active", "warmup_day": 0, "today": 0, "cap": 2,
                                    "cap_reason": "warmup", "rate": "10/min"}


def test_status_past_warmup_without_spike_guard(clock):
    """Warmed up and no spike guard: no cap and no cap reason; no rate configured."""
    gov = governor(clock, {"acme.fr": TEN_AM - 5 * DAY}, {("acme.fr", TODAY): 7}, **WARMUP)
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 5, "today": 7, "cap": None,
                                     "cap_reason": None, "rate": None}


def test_status_under_the_spike_guard(clock):
    """Warmed up with 7 days of 100/day and max_growth 2.0: cap 200 for "spike"."""
    first, volumes = spike_history([100] * 7)
    volumes[("acme.fr", TODAY)] = 42
    gov = governor(clock, first, volumes, spike={"max_growth": 2.0}, **WARMUP)
    assert gov.status("acme.fr") == {"state": "active", "warmup_day": 10, "today": 42, "cap": 200,
                                     "cap_reason": "spike", "rate": None}


# --- bulk pacing and pauses -------------------------------------------------------------

def test_bulk_mail_is_paced_at_bulk_rate_and_transactional_is_not(clock):
    """Bulk recipients go at limits.bulk.rate; the next waits for the window to move, while
    transactional mail of the same domain is still admitted."""
    gov = governor(clock, bulk={"rate": "2/min"})
    for _ in range(2):
        assert gov.admit("acme.fr", 1, bulk=True) is None
        gov.sending("acme.fr", 1, bulk=True)
    hold = gov.admit("acme.fr", 1, bulk=True)
    assert hold is not None and hold.reason is HoldReason.BULK and hold.until == TEN_AM + 60
    assert gov.admit("acme.fr", 1) is None                 # a password reset goes at once
    clock.t += 60
    assert gov.admit("acme.fr", 1, bulk=True) is None


def test_a_paused_domain_is_held_and_resumes(clock):
    """`relay domains pause` holds every message of the domain, rechecked periodically."""
    gov = governor(clock)
    gov.set_paused({"acme.fr": ("all", "paused by the operator")})
    hold = gov.admit("acme.fr", 1)
    assert hold is not None and hold.reason is HoldReason.PAUSED and hold.until > clock.t
    assert gov.admit("other.fr", 1) is None
    gov.set_paused({})
    assert gov.admit("acme.fr", 1) is None


def test_a_bulk_pause_holds_only_bulk_mail(clock):
    """The reputation rules' `pause_bulk`: newsletters wait, invoices still go."""
    gov = governor(clock)
    gov.set_paused({"acme.fr": ("bulk", "complaint rate 0.12% (above limit)")})
    assert gov.admit("acme.fr", 1) is None
    hold = gov.admit("acme.fr", 1, bulk=True)
    assert hold is not None and hold.reason is HoldReason.PAUSED
    assert gov.status("acme.fr")["state"] == "paused (bulk)"


def test_attempts_in_flight_count_against_the_daily_cap(clock):
    """Parallel workers: recipients handed to the route but not yet answered count toward
    the cap, so four workers cannot all pass a cap with room for one more."""
    gov = governor(clock, warmup={"schedule": [3]})
    send(gov, "acme.fr")                                   # 1 delivered today
    assert gov.admit("acme.fr", 1) is None
    gov.sending("acme.fr", 1)                              # 2 in all, one still in flight
    assert gov.admit("acme.fr", 1) is None
    gov.sending("acme.fr", 1)                              # 3: the cap, with 2 in flight
    hold = gov.admit("acme.fr", 1)
    assert hold is not None and hold.reason is HoldReason.WARMUP
    gov.delivered("acme.fr", 0, attempted=1)               # one of them failed: room again
    assert gov.admit("acme.fr", 1) is None


# --- the transactional reserve ------------------------------------------------------------

def send_bulk(gov: Governor, domain: str, recipients: int = 1) -> Hold | None:
    hold = gov.admit(domain, recipients, bulk=True)
    if hold is None:
        gov.sending(domain, recipients, bulk=True)
        gov.delivered(domain, recipients)
    return hold


def test_bulk_leaves_the_reserve_of_the_warmup_cap_to_transactional_mail(clock):
    """Day 0 caps 50 recipients: bulk stops at 40 (80%), password resets still get the last
    10, and tomorrow bulk goes on."""
    gov = governor(clock, warmup={"schedule": [50, 100]}, bulk={"rate": "1000/min"})
    sent = 0
    while (hold := send_bulk(gov, "acme.fr")) is None:
        sent += 1
    assert sent == 40
    assert hold.reason is HoldReason.WARMUP and hold.until == TOMORROW
    assert "bulk's 80%" in hold.detail
    assert send_until_held(gov, "acme.fr") == (10, Hold(TOMORROW, HoldReason.WARMUP,
                                                        "warmup cap 50/day reached (50 sent)"))


def test_bulk_leaves_the_reserve_of_the_domain_rate_to_transactional_mail(clock):
    """domain_rate 10/min: bulk may fill 8 of the window; transactional mail the other 2."""
    gov = governor(clock, domain_rate={"default": "10/min"}, bulk={"rate": "1000/min"})
    for _ in range(8):
        assert send_bulk(gov, "acme.fr") is None
    hold = send_bulk(gov, "acme.fr")
    assert hold is not None and hold.reason is HoldReason.RATE and hold.until == TEN_AM + 60
    assert send_until_held(gov, "acme.fr")[0] == 2


def test_a_zero_reserve_lets_bulk_use_the_whole_cap(clock):
    gov = governor(clock, warmup={"schedule": [50]}, bulk={"rate": "1000/min", "reserve": "0%"})
    sent = 0
    while send_bulk(gov, "acme.fr") is None:
        sent += 1
    assert sent == 50


def test_the_reserve_must_leave_bulk_something():
    with pytest.raises(ValueError, match="below 100%"):
        limits(bulk={"reserve": "100%"})


def test_the_rate_windows_carry_over_to_the_next_governor(clock):
    """A reload replaces the delivery process: the new governor starts from the old one's
    windows (saved in the spool), so 2/h stays 2/h across it; windows of rates no longer in
    use past their longest period are not carried."""
    gov = governor(clock, domain_rate={"default": "2/h"})
    assert send(gov, "acme.fr") is None and send(gov, "acme.fr") is None
    saved = gov.export_windows()
    after = governor(clock, domain_rate={"default": "2/h"})
    after = Governor(after.limits, clock, {}, {}, saved)
    hold = after.admit("acme.fr", 1)
    assert hold is not None and hold.reason is HoldReason.RATE and hold.until == TEN_AM + 3600
    clock.t += 3601
    assert gov.export_windows() == {}


# --- the line: a held backlog comes due at the pace of the rate ----------------------------

def test_a_held_backlog_gets_one_slot_each_at_the_pace_of_the_rate(clock):
    """60/min, a full window, 100 more bulk messages: each is held once, to its own slot one
    second after the one before (not all to the same instant, to be held again but one), and
    each is admitted when it comes back at its slot, a little late as the scheduler is."""
    gov = governor(clock, bulk={"rate": "60/min"})
    for _ in range(60):
        assert send_bulk(gov, "acme.fr") is None
    holds = [gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}") for k in range(100)]
    assert [h.until for h in holds] == [TEN_AM + 60 + k for k in range(100)]
    assert {h.reason for h in holds} == {HoldReason.BULK}
    for k, hold in enumerate(holds):
        clock.t = hold.until + 0.3
        assert gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}") is None, k
        gov.sending("acme.fr", 1, bulk=True)


def test_a_message_whose_window_is_still_full_at_its_slot_keeps_its_place(clock):
    """Scheduling jitter: sends recorded a little after their slots can leave the window full
    when a later message's slot comes. It waits for the window only (a fraction of a second),
    not behind the whole line."""
    gov = governor(clock, bulk={"rate": "2/min"})
    gov.sending("acme.fr", 2, bulk=True)                     # the window is full until 10:01
    slots = [gov.admit("acme.fr", 1, bulk=True, ticket=t).until for t in "abcd"]
    assert slots == [TEN_AM + 60, TEN_AM + 90, TEN_AM + 120, TEN_AM + 150]
    for ticket, slot in (("a", 60), ("b", 90)):              # each sent 0.4 s after its slot
        clock.t = TEN_AM + slot + 0.4
        assert gov.admit("acme.fr", 1, bulk=True, ticket=ticket) is None
        gov.sending("acme.fr", 1, bulk=True)
    clock.t = TEN_AM + 120                                   # c on time: a and b still count
    again = gov.admit("acme.fr", 1, bulk=True, ticket="c")
    assert again.until == TEN_AM + 120.4                     # the window, not the line's end
    clock.t = again.until
    assert gov.admit("acme.fr", 1, bulk=True, ticket="c") is None


def test_a_newcomer_queues_behind_the_held_backlog(clock):
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    for k in range(10):
        gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}")
    clock.t += 65                                            # the window has room again...
    late = gov.admit("acme.fr", 1, bulk=True, ticket="late")
    assert late is not None and late.until == TEN_AM + 70    # ...but ten are ahead of it


def test_the_line_spaces_bulk_at_its_share_of_a_slower_domain_rate(clock):
    """domain_rate 100/h binds bulk (80 of them an hour) before bulk.rate 600/min does: the
    slots are 45 s apart."""
    gov = governor(clock, domain_rate={"default": "100/h"}, bulk={"rate": "600/min"})
    gov.sending("acme.fr", 80, bulk=True)
    holds = [gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}") for k in range(3)]
    assert [h.reason for h in holds] == [HoldReason.RATE] * 3
    assert [h.until - holds[0].until for h in holds] == [0, 45, 90]


def test_transactional_mail_is_not_behind_the_bulk_line(clock):
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    assert gov.admit("acme.fr", 1, bulk=True, ticket="news") is not None
    assert gov.admit("acme.fr", 1, ticket="reset") is None


def test_a_line_whose_messages_never_come_back_is_dropped(clock):
    """The held backlog was deleted (`relay queue delete`): once the first slot still owed is
    two minutes late, new mail no longer waits behind slots nobody will use."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    for k in range(600):                                     # ten minutes of slots
        gov.admit("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 60 + 119                              # the first slot, 119 s late
    assert gov.admit("acme.fr", 1, bulk=True, ticket="new").until == TEN_AM + 660
    clock.t = TEN_AM + 60 + 121
    assert gov.admit("acme.fr", 1, bulk=True, ticket="newer") is None


def test_transactional_mail_inside_the_reserve_does_not_slow_the_bulk_line(clock):
    """domain_rate 10/min: bulk has its own 8; a password reset uses the reserve, and the bulk
    line still gets its 8 (the whole rate is the only other limit)."""
    gov = governor(clock, domain_rate={"default": "10/min"}, bulk={"rate": "1000/min"})
    assert send(gov, "acme.fr", 2) is None                   # transactional: the reserve
    for _ in range(8):
        assert send_bulk(gov, "acme.fr") is None
    assert gov.admit("acme.fr", 1, bulk=True) is not None    # bulk's 8 are used
    assert gov.admit("acme.fr", 1) is not None               # and 10 in all


def test_messages_held_again_at_their_turn_get_slots_of_their_own(clock):
    """Three messages whose slots came while the window was full (other mail used it) are not
    all held to the same instant: each gets its own slot from the head of the line."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    slots = [gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}").until for k in range(3)]
    assert slots == [TEN_AM + 60, TEN_AM + 61, TEN_AM + 62]
    clock.t = TEN_AM + 62
    gov.sending("acme.fr", 60, bulk=True)                    # someone else took the window
    again = [gov.admit("acme.fr", 1, bulk=True, ticket=f"m{k}").until for k in range(3)]
    assert again == [TEN_AM + 122, TEN_AM + 123, TEN_AM + 124]


def test_a_full_window_does_not_queue_new_mail_behind_a_deleted_backlog(clock):
    """The backlog's slots are never used (deleted) and the window is full again when a new
    campaign arrives: it gets the window's next room, not a slot after the deleted backlog."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    for k in range(3000):                                    # fifty minutes of slots
        gov.admit("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 400
    gov.sending("acme.fr", 60, bulk=True)                    # a new campaign's first window
    hold = gov.admit("acme.fr", 1, bulk=True, ticket="new")
    assert hold.until == TEN_AM + 460


def test_sweep_names_the_domains_whose_line_stopped_moving(clock):
    """The delivery process sweeps every few seconds: a line whose first owed message is two
    minutes late is dropped and its domain named once, so the mail slotted behind the deleted
    backlog is looked at again instead of waiting for slots nobody will use."""
    gov = governor(clock, bulk={"rate": "60/min"})
    gov.sending("acme.fr", 60, bulk=True)
    for k in range(300):                                     # slots until 10:06
        gov.admit("acme.fr", 1, bulk=True, ticket=f"gone{k}")
    clock.t = TEN_AM + 60 + 100
    assert gov.sweep() == set()                              # late, but not two minutes
    clock.t = TEN_AM + 60 + 121
    assert gov.sweep() == {"acme.fr"}
    assert gov.sweep() == set()

"""relay.state: the contract every `State` implementation keeps (`relay/state/__init__.py`).

One suite runs against each implementation through the `state_factory` fixture. A builder
per implementation (`BUILDERS`) opens a `State` on storage of the test's own (named by a
fresh directory); the factory hands it a FakeClock, at 10:00 UTC on day `TODAY` so that
the next UTC midnight (`TOMORROW`) is unambiguous, and a configuration. `restart` closes a
state and opens a new one on the same storage, as the next process would; `another_process`
opens one beside it, as the listener and the delivery process share the state. Another
implementation joins the suite by adding its builder. Each scenario runs in `asyncio.run`;
nothing sleeps. Tests that hold for one implementation only (its storage's migrations)
come last, under their own heading.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import tempfile
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import redis.asyncio as aioredis

from relay.config import Config
from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key
from relay.governor.governor import Grant, HoldReason
from relay.governor.reputation import Rates
from relay.spool.store import Spool
from relay.state import DMARC_RETENTION, Outcome, RampStatus, State
from relay.state.redis import RedisState
from relay.state.sqlite import SqliteState
from relay.state.suppressions import SuppressionReason
from relay.watch.aggregate import AggregateReport, AuthResult, Row
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import RedisServer

DAY = 86400
TODAY = 20_000                        # a UTC day number
MIDNIGHT = TODAY * DAY
TEN_AM = MIDNIGHT + 10 * 3600
TOMORROW = MIDNIGHT + DAY

WARMUP = {"warmup": {"schedule": [2, 4, 6], "per_provider": False}}


# --- the implementations -----------------------------------------------------------------

@dataclass
class Opened:
    """A state on its storage, and how to let go of the storage (as a process exits)."""
    state: State
    release: Callable[[], None]


Builder = Callable[[Path, Config, FakeClock], Opened]


def open_sqlite(directory: Path, config: Config, clock: FakeClock) -> Opened:
    """The embedded state, on the spool's database in `directory`."""
    spool = Spool(directory)
    spool.start()
    return Opened(SqliteState(spool.db, config, clock), spool.close)


_redis: list[RedisServer] = []        # one redis-server for the suite, started at first use


def open_redis(directory: Path, config: Config, clock: FakeClock) -> Opened:
    """The fleet's shared state, on a real redis-server; the test's storage starts empty
    (flushed when its directory is first used), and a restart is a new client and state."""
    if not _redis:
        _redis.append(RedisServer(Path(tempfile.mkdtemp(prefix="relay-redis-"))).start())
        atexit.register(_redis[0].stop)
    client = aioredis.Redis.from_url(_redis[0].url)
    if not directory.exists():
        directory.mkdir(parents=True)
        asyncio.run(_flush(_redis[0].url))
    spool = Spool(directory / "node")            # the node's own database: its outbox
    spool.start()
    return Opened(RedisState(client, config, clock, spool.db), spool.close)


async def _flush(url: str) -> None:
    async with aioredis.Redis.from_url(url) as client:
        await client.flushall()


BUILDERS: dict[str, Builder] = {
    "sqlite": open_sqlite,
    "redis": open_redis,
}


def make_config(directory: Path, **sections) -> Config:
    """The smallest relay.yaml, with `sections` (`limits={...}`, `reputation={...}`) added."""
    return Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(directory)}, **sections})


class StateFactory:
    """Opens states of one implementation on one storage, with one clock, as successive
    processes would."""

    def __init__(self, build: Builder, directory: Path) -> None:
        self.build = build
        self.directory = directory
        self.clock = FakeClock(TEN_AM)
        self.config = make_config(directory)
        self._open: list[Opened] = []

    def __call__(self, **sections) -> State:
        """A state configured with `sections` (kept for the states `restart` opens)."""
        self.config = make_config(self.directory, **sections)
        return self._open_one()

    async def restart(self, state: State) -> State:
        """Close `state` and open a new one on the same storage: the next process."""
        await state.close()
        opened = next(o for o in self._open if o.state is state)
        self._open.remove(opened)
        opened.release()
        return self._open_one()

    def another_process(self) -> State:
        """A second state on the same storage, open beside the others (another process)."""
        return self._open_one()

    def release_all(self) -> None:
        for opened in self._open:
            opened.release()
        self._open.clear()

    def _open_one(self) -> State:
        opened = self.build(self.directory, self.config, self.clock)
        self._open.append(opened)
        return opened.state


@pytest.fixture(params=sorted(BUILDERS))
def state_factory(request, tmp_path) -> StateFactory:
    factory = StateFactory(BUILDERS[request.param], tmp_path / "state")
    yield factory
    factory.release_all()


# --- helpers -------------------------------------------------------------------------------

_serial = itertools.count()


def event(kind: FeedbackKind, recipient: str = "a@x.net", *, domain: str | None = "acme.fr",
          at: float = TEN_AM, message_id: str | None = None) -> FeedbackEvent:
    """A feedback event from a DSN, with a dedupe key of its own."""
    return FeedbackEvent(kind, recipient, "dsn", at, message_id, "", None,
                         dedupe_key("test", next(_serial)), domain)


def delivered(key: str, count: int, domain: str = "acme.fr", provider: str = "") -> Outcome:
    """An attempt that delivered all of its `count` recipients; `key`, the reservation of
    its grant (or a name of the test's, for an outcome with no grant before it)."""
    return Outcome(key, domain, {provider: count}, {provider: count})


async def count(state: State, campaign: str, recipients: int) -> int:
    """What acceptance does with a submission's campaign: its total with these recipients,
    then, as it is stored, the count."""
    total = await state.campaign_total("acme.fr", campaign, recipients)
    await state.record_accepted("acme.fr", campaign, recipients, "")
    return total


async def remember(state: State, message_id: str, domain: str = "acme.fr") -> None:
    """A submission with that Message-ID stored (no campaign recipients)."""
    await state.record_accepted(domain, "-", 0, message_id)


async def reserve(state: State, asked: int | dict[str, int], domain: str = "acme.fr",
                  bulk: bool = False) -> Grant:
    """The delivery process's question, for a message with no place in a rate's line."""
    return await state.reserve(domain, asked, bulk, None)


async def ramp(state: State, domain: str = "acme.fr") -> RampStatus:
    """The domain's one ramp (caps per domain)."""
    [only] = (await state.domain_status(domain)).ramps
    return only


async def copied(state: State) -> None:
    """Let a state that answers lookups from a copy in memory (SQLite: the listener's copy of
    the list, `suppression_filter.py`) finish making it; others have nothing to finish."""
    copying = getattr(state, "_suppressed", None)
    if copying is not None:
        await copying.copy()


# --- a new state ------------------------------------------------------------------------

def test_a_new_state_knows_nothing(state_factory):
    """No domains, pauses or suppressions, zero rates; a domain is on warm-up day 0, none sent."""
    state = state_factory(limits=WARMUP)

    async def scenario():
        assert await state.domains() == []
        assert await state.paused() == {}
        assert await state.suppressions() == []
        assert await state.suppression_counts() == {}
        assert await state.suppression("a@x.net", "acme.fr") is None
        assert await state.rates("acme.fr") == Rates(0, 0, 0)
        status = await state.domain_status("acme.fr")
        assert (status.domain, status.state, status.pause_reason) == ("acme.fr", "active", "")
        assert status.ramps == [RampStatus("", 0, 0, 2, "warmup", None)]
        assert status.days_not_counted == []
    asyncio.run(scenario())


def test_check_passes_on_a_healthy_state(state_factory):
    """`check()` returns when the state answers a read."""
    state = state_factory()
    asyncio.run(state.check())


def test_domains_are_those_sent_for_or_paused(state_factory):
    """`domains()` lists, sorted, the domains with a delivery recorded and those paused."""
    state = state_factory()

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 1, domain="acme.fr"))
        await state.pause("Other.FR", "operator")
        return await state.domains()
    assert asyncio.run(scenario()) == ["acme.fr", "other.fr"]


# --- reserve and record_outcome ---------------------------------------------------------------

def test_reserve_grants_the_days_warmup_cap_and_outcomes_count_across_a_restart(state_factory):
    """Day 0 of [2, 4, 6]: 2 of 3 granted, the rest held until the next UTC midnight; after
    the outcome and a restart the day's 2 are counted and nothing more is granted."""
    state = state_factory(limits=WARMUP)

    async def scenario():
        grant = await reserve(state, 3)
        assert grant.count == 2
        assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
        await state.record_outcome(Outcome("Q1:1", "acme.fr", {"": 2}, {"": 2}))
        assert await ramp(state) == RampStatus("", 0, 2, 2, "warmup", TOMORROW)
        fresh = await state_factory.restart(state)
        assert await ramp(fresh) == RampStatus("", 0, 2, 2, "warmup", TOMORROW)
        grant = await reserve(fresh, 1)
        assert grant.count == 0
        assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
    asyncio.run(scenario())


def test_an_outcome_recorded_twice_counts_once(state_factory):
    """The same outcome key twice counts its deliveries once, in the deciding state and stored."""
    state = state_factory(limits={"warmup": {"schedule": [5, 10], "per_provider": False}})

    async def scenario():
        grant = await reserve(state, 2)
        assert grant.count == 2
        await state.record_outcome(delivered(grant.reservation, 2))
        await state.record_outcome(delivered(grant.reservation, 2))
        again = await reserve(state, 5)
        assert again.count == 3
        await state.record_outcome(Outcome(again.reservation, "acme.fr", {"": 3}, {}))  # none
        fresh = await state_factory.restart(state)
        assert (await ramp(fresh)).today == 2
        assert (await reserve(fresh, 5)).count == 3
    asyncio.run(scenario())


def test_an_outcome_retried_after_a_restart_counts_once_in_the_deciding_state(state_factory):
    """An outcome stored before a restart and retried after it adds nothing to today's count."""
    state = state_factory(limits={"warmup": {"schedule": [5, 10], "per_provider": False}})

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 2))
        fresh = await state_factory.restart(state)
        grant = await reserve(fresh, 1)
        assert grant.count == 1
        await fresh.record_outcome(delivered(grant.reservation, 1))
        await fresh.record_outcome(delivered("Q1:1", 2))          # the retry
        assert (await ramp(fresh)).today == 3
        assert (await reserve(fresh, 5)).count == 2
    asyncio.run(scenario())


def test_a_repeated_outcome_never_releases_another_reservation(state_factory):
    """Cap 5: Q1 reserves 2 and records them; Q2 reserves 2 (in flight); Q1's outcome
    recorded again (a retried write) must not release Q2's: 1 is left, not 3."""
    state = state_factory(limits={"warmup": {"schedule": [5, 10], "per_provider": False}})

    async def scenario():
        grant = await reserve(state, 2)
        assert grant.count == 2
        outcome = delivered(grant.reservation, 2)
        await state.record_outcome(outcome)
        assert (await reserve(state, 2)).count == 2                  # Q2, in flight
        await state.record_outcome(outcome)
        return (await reserve(state, 5)).count
    assert asyncio.run(scenario()) == 1


def test_per_provider_ramps_grant_and_report_each_provider_apart(state_factory):
    """With per-provider caps each provider gets day 0's 2: google 2 of 3, microsoft its 1,
    and `domain_status` shows one ramp per provider once their outcomes are recorded."""
    state = state_factory(limits={"warmup": {"schedule": [2, 4], "per_provider": True}})

    async def scenario():
        grant = await reserve(state, {"google": 3, "microsoft": 1})
        assert (grant.count, grant.by_provider) == (3, {"google": 2, "microsoft": 1})
        assert (grant.hold.until, grant.hold.reason) == (TOMORROW, HoldReason.WARMUP)
        await state.record_outcome(Outcome("Q1:1", "acme.fr", {"google": 2, "microsoft": 1},
                                           {"google": 2, "microsoft": 1}))
        return (await state.domain_status("acme.fr")).ramps
    assert asyncio.run(scenario()) == [RampStatus("google", 0, 2, 2, "warmup", TOMORROW),
                                       RampStatus("microsoft", 0, 1, 2, "warmup", None)]


def test_a_domain_ramped_as_a_whole_keeps_its_day_when_caps_become_per_provider(state_factory):
    """Two days of the whole domain's ramp, then per-provider caps (a restart with
    per_provider on): google's first delivery continues at warm-up day 2, after a restart too."""
    state = state_factory(limits=WARMUP)
    clock = state_factory.clock

    async def scenario():
        nonlocal state
        await state.record_outcome(delivered("Q1:1", 2))
        clock.advance(2 * DAY)
        state_factory.config = make_config(
            state_factory.directory, limits={"warmup": {"schedule": [2, 4, 6], "per_provider": True}})
        state = await state_factory.restart(state)
        grant = await reserve(state, {"google": 9})
        assert grant.by_provider == {"google": 6}
        await state.record_outcome(delivered("Q2:1", 6, provider="google"))
        state = await state_factory.restart(state)
        return (await state.domain_status("acme.fr")).ramps
    assert asyncio.run(scenario()) == [RampStatus("google", 2, 6, 6, "warmup", TOMORROW + 2 * DAY)]


def test_what_the_whole_domain_sent_today_counts_against_each_provider_after_the_switch(
        state_factory):
    """Day 0 of [5, 10] as a whole domain: 5 sent, the cap reached. Caps per provider from
    now on: nobody knows to which providers those 5 went, so they count against each, and
    google gets nothing more today; tomorrow it has day 1's 10."""
    state = state_factory(limits={"warmup": {"schedule": [5, 10], "per_provider": False}})

    async def scenario():
        nonlocal state
        await state.record_outcome(delivered("Q1:1", 5))
        state_factory.config = make_config(
            state_factory.directory, limits={"warmup": {"schedule": [5, 10], "per_provider": True}})
        state = await state_factory.restart(state)
        today = (await reserve(state, {"google": 3})).count
        state_factory.clock.advance(DAY)
        return today, (await reserve(state, {"google": 12})).count
    assert asyncio.run(scenario()) == (0, 10)


def test_the_first_send_is_kept_and_the_warmup_day_moves_on_at_utc_midnight(state_factory):
    """Day 0 lasts until the UTC midnight after the first delivery, then day 1 (cap 4) and day 2
    (cap 6) follow, across restarts; a later delivery does not move the first send."""
    state = state_factory(limits=WARMUP)
    clock = state_factory.clock

    async def scenario():
        nonlocal state
        await state.record_outcome(delivered("Q1:1", 2))
        clock.advance(14 * 3600 - 1)                       # 23:59:59 on day 0
        state = await state_factory.restart(state)
        assert (await ramp(state)).warmup_day == 0
        clock.advance(1)                                   # midnight
        state = await state_factory.restart(state)
        assert await ramp(state) == RampStatus("", 1, 0, 4, "warmup", None)
        assert (await reserve(state, 5)).count == 4
        await state.record_outcome(delivered("Q2:1", 4))
        clock.advance(DAY)
        state = await state_factory.restart(state)
        assert await ramp(state) == RampStatus("", 2, 0, 6, "warmup", None)
    asyncio.run(scenario())


def test_the_spike_guard_sees_the_last_seven_days_after_a_restart(state_factory):
    """After seven days of 100 delivered, a restarted state caps today at max_growth (2) x
    their average: 200, held until the next UTC midnight for the spike guard."""
    state = state_factory(limits={"spike": {"max_growth": 2.0}, "warmup": {"per_provider": False}})
    clock = state_factory.clock

    async def scenario():
        nonlocal state
        for day in range(7):
            await state.record_outcome(delivered(f"Q{day}:1", 100))
            clock.advance(DAY)
        state = await state_factory.restart(state)
        assert await ramp(state) == RampStatus("", 7, 0, 200, "spike", None)
        return await reserve(state, 250)
    grant = asyncio.run(scenario())
    assert grant.count == 200
    assert (grant.hold.until, grant.hold.reason) == (TOMORROW + 7 * DAY, HoldReason.SPIKE)


def test_bulk_keeps_its_seven_day_pace_under_the_spike_guard(state_factory):
    """A domain sending only bulk mail, 100 a day for seven days, under max_growth 1.2 and
    the 20% reserve: the cap is 120, of which bulk's share would be 96, and then 92, 91...
    day after day; bulk keeps at least its average (100), the reserve comes out of the
    growth (20 left for transactional mail). Day 8 at 150 asked: 100 granted."""
    state = state_factory(limits={"spike": {"max_growth": 1.2}, "warmup": {"per_provider": False},
                                  "bulk": {"reserve": "20%"}})
    clock = state_factory.clock

    async def scenario():
        for day in range(7):
            await state.record_outcome(delivered(f"Q{day}:1", 100))
            clock.advance(DAY)
        bulk = await reserve(state, 150, bulk=True)
        await state.record_outcome(Outcome(bulk.reservation, "acme.fr", {"": bulk.count},
                                           {"": bulk.count}))
        return bulk, await reserve(state, 50)
    bulk, transactional = asyncio.run(scenario())
    assert bulk.count == 100 and bulk.hold.reason is HoldReason.SPIKE
    assert transactional.count == 20                       # the rest of the cap of 120


def test_the_rate_windows_outlive_a_restart(state_factory):
    """`close()` keeps the rate windows: with domain_rate 10/min, the next state holds the
    11th recipient of the minute for the rate, and grants it once the minute has passed."""
    state = state_factory(limits={"domain_rate": {"default": "10/min"}})

    async def scenario():
        assert (await reserve(state, 10)).count == 10
        fresh = await state_factory.restart(state)
        assert (await fresh.domain_status("acme.fr")).rate == "10/min"
        grant = await reserve(fresh, 1)
        assert grant.count == 0 and grant.hold.reason is HoldReason.RATE
        state_factory.clock.advance(61)
        assert (await reserve(fresh, 1)).count == 1
    asyncio.run(scenario())


# --- days that do not count toward the warm-up ------------------------------------------------

def test_a_day_over_the_complaint_limit_does_not_count_toward_the_warmup(state_factory):
    """1 complaint for 5 delivered (over 0.10%) on day 0: two calendar days later the domain is
    on warm-up day 1, and `days_not_counted` names day 0 for its complaints."""
    state = state_factory(limits={"warmup": {"schedule": [10, 20, 30], "per_provider": False}})
    clock = state_factory.clock

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 5))
        await state.record_feedback([event(FeedbackKind.COMPLAINED, at=TEN_AM + 60)], True)
        clock.advance(DAY)
        assert (await ramp(state)).warmup_day == 0
        clock.advance(DAY)
        status = await state.domain_status("acme.fr")
        assert [(r.warmup_day, r.cap) for r in status.ramps] == [(1, 20)]
        [(day, why)] = status.days_not_counted
        assert day == TODAY and "complaint" in why
    asyncio.run(scenario())


def test_an_untrusted_report_counts_against_the_day_it_was_received(state_factory):
    """A report from the feedback listener dates itself (anyone can forge Arrival-Date): its
    complaint counts against today's health, so it cannot turn a past day unhealthy."""
    state = state_factory(limits={"warmup": {"schedule": [10, 20, 30], "per_provider": False}})
    clock = state_factory.clock

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 5))
        await remember(state, "<m1@acme.fr>")
        clock.advance(2 * DAY)
        forged = event(FeedbackKind.COMPLAINED, domain=None, message_id="<m1@acme.fr>",
                       at=TEN_AM + 60)                          # "two days ago"
        assert len((await state.record_feedback([forged], False)).new) == 1
        return await state.domain_status("acme.fr")
    status = asyncio.run(scenario())
    assert [r.warmup_day for r in status.ramps] == [2]
    assert [day for day, _ in status.days_not_counted] == [TODAY + 2]     # today's, if any


def test_a_paused_day_does_not_count_toward_the_warmup(state_factory):
    """A domain paused and resumed on day 0 is on warm-up day 0 the next day; that day is
    not counted because it was "paused"."""
    state = state_factory(limits={"warmup": {"schedule": [10, 20, 30], "per_provider": False}})
    clock = state_factory.clock

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 5))
        await state.pause("acme.fr", "operator")
        clock.advance(3600)
        assert await state.resume("acme.fr")
        clock.advance(DAY)
        status = await state.domain_status("acme.fr")
        assert [(r.warmup_day, r.cap) for r in status.ramps] == [(0, 10)]
        assert status.days_not_counted == [(TODAY, "paused")]
    asyncio.run(scenario())


def test_refresh_makes_a_deciding_state_see_a_day_that_stopped_counting(state_factory):
    """A state that has decided already learns at `refresh()` of day 0's complaints, recorded
    by another process: on day 1 it grants day 0's cap (10), not day 1's (20)."""
    state = state_factory(limits={"warmup": {"schedule": [10, 20, 30], "per_provider": False}})
    listener = state_factory.another_process()

    async def scenario():
        assert (await reserve(state, 5)).count == 5
        await state.record_outcome(delivered("Q1:1", 5))
        await listener.record_feedback([event(FeedbackKind.COMPLAINED)], True)
        state_factory.clock.advance(DAY)
        await state.refresh()
        return await reserve(state, 15)
    grant = asyncio.run(scenario())
    assert grant.count == 10 and grant.hold.reason is HoldReason.WARMUP


# --- pauses ---------------------------------------------------------------------------------

def test_a_paused_domain_is_held_until_resumed(state_factory):
    """`pause` holds all of the domain's mail with its reason; `resume` lifts it once (True),
    and a second `resume` finds nothing to lift (False)."""
    state = state_factory()

    async def scenario():
        await state.pause("acme.fr", "complaints from a client")
        assert await state.paused() == {"acme.fr": ("all", "complaints from a client")}
        assert (await state.domain_status("acme.fr")).state == "paused (all)"
        grant = await reserve(state, 1)
        assert grant.count == 0 and grant.hold.reason is HoldReason.PAUSED
        assert await state.resume("acme.fr") is True
        assert await state.resume("acme.fr") is False
        assert await state.paused() == {}
        assert (await reserve(state, 1)).count == 1
    asyncio.run(scenario())


def test_a_pause_made_by_another_process_holds_mail_once_read(state_factory):
    """A state that has decided already holds a domain another process paused once it reads
    `paused()`, as the delivery process does every few seconds, and lets it go once resumed."""
    state = state_factory()
    operator = state_factory.another_process()

    async def scenario():
        assert (await reserve(state, 1)).count == 1
        await operator.pause("acme.fr", "operator")
        assert await state.paused() == {"acme.fr": ("all", "operator")}
        assert (await reserve(state, 1)).hold.reason is HoldReason.PAUSED
        assert await operator.resume("acme.fr") is True
        assert await state.paused() == {}
        assert (await reserve(state, 1)).count == 1
    asyncio.run(scenario())


def test_refresh_rereads_the_pauses_of_other_processes(state_factory):
    """After another process pauses a domain, `refresh()` alone makes this state hold its mail."""
    state = state_factory()
    operator = state_factory.another_process()

    async def scenario():
        assert (await reserve(state, 1)).count == 1
        await operator.pause("acme.fr", "operator")
        await state.refresh()
        return await reserve(state, 1)
    grant = asyncio.run(scenario())
    assert grant.count == 0 and grant.hold.reason is HoldReason.PAUSED


# --- suppressions ------------------------------------------------------------------------

def test_suppressions_are_kept_per_recipient_and_domain_whatever_the_case(state_factory):
    """suppress/suppression/unsuppress/suppressions/suppression_counts; addresses and domains
    compare case-insensitively; suppressing again is False and keeps the first reason."""
    state = state_factory()

    async def scenario():
        assert await state.suppress("A@X.net", "Acme.FR", SuppressionReason.HARD_BOUNCE) is True
        assert await state.suppress("a@x.net", "acme.fr", SuppressionReason.COMPLAINT) is False
        assert await state.suppress("b@x.net", "other.fr", SuppressionReason.MANUAL) is True
        assert await state.suppression("a@X.NET", "ACME.fr") is SuppressionReason.HARD_BOUNCE
        assert await state.suppression("a@x.net", "other.fr") is None
        assert await state.suppressions("acme.fr") == [
            ("a@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE, TEN_AM)]
        assert [e[:2] for e in await state.suppressions()] == [("a@x.net", "acme.fr"),
                                                               ("b@x.net", "other.fr")]
        assert await state.suppression_counts() == {"hard_bounce": 1, "manual": 1}
        assert await state.unsuppress("A@x.net", "acme.FR") is True
        assert await state.unsuppress("a@x.net", "acme.fr") is False
        assert await state.suppression("a@x.net", "acme.fr") is None
    asyncio.run(scenario())


def test_a_change_made_by_another_process_counts_at_the_next_lookup(state_factory):
    """The listener answers lookups from memory where it can: a suppression or its removal
    made by another process (a bounce in the delivery process, the CLI) counts at the very
    next RCPT TO, before and after the listener has copied the list."""
    listener = state_factory()
    elsewhere = state_factory.another_process()

    async def scenario():
        await elsewhere.suppress("old@x.net", "acme.fr", SuppressionReason.MANUAL)
        assert await listener.suppression("new@x.net", "acme.fr") is None
        await copied(listener)
        assert await listener.suppression("old@X.net", "acme.fr") is SuppressionReason.MANUAL
        assert await listener.suppression("new@x.net", "acme.fr") is None
        await elsewhere.suppress("new@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE)
        assert await listener.suppression("new@x.net", "acme.fr") is SuppressionReason.HARD_BOUNCE
        await copied(listener)
        assert await listener.suppression("NEW@x.net ", "acme.fr") is SuppressionReason.HARD_BOUNCE
        assert await elsewhere.unsuppress("old@x.net", "acme.fr") is True
        assert await listener.suppression("old@x.net", "acme.fr") is None
        await copied(listener)
        assert await listener.suppression("old@x.net", "acme.fr") is None
        assert await listener.suppression("new@x.net", "acme.fr") is SuppressionReason.HARD_BOUNCE
    asyncio.run(scenario())


# --- record_feedback ------------------------------------------------------------------------

def test_a_hard_bounce_suppresses_and_a_duplicate_is_not_new(state_factory):
    """A hard bounce is new and suppresses its recipient, against its sender domain in lower
    case; the same dedupe key again, before or after a restart, is neither new nor
    suppresses again."""
    state = state_factory()
    bounce = event(FeedbackKind.BOUNCED_HARD, "A@x.net", domain="Acme.FR")

    async def scenario():
        result = await state.record_feedback([bounce], True)
        assert result.new == [(bounce, "acme.fr")]
        assert result.suppressed == [("acme.fr", "hard_bounce", "dsn")]
        assert await state.suppression("a@x.net", "acme.fr") is SuppressionReason.HARD_BOUNCE
        again = await state.record_feedback([bounce], True)
        assert (again.new, again.suppressed, again.dropped) == ([], [], [])
        fresh = await state_factory.restart(state)
        again = await fresh.record_feedback([bounce], True)
        assert (again.new, again.suppressed, again.dropped) == ([], [], [])
        assert await fresh.rates("acme.fr") == Rates(0, 0, 1)
    asyncio.run(scenario())


def test_an_untrusted_event_counts_only_for_a_remembered_message_and_its_domain(state_factory):
    """Untrusted, an event naming an unknown Message-ID is dropped (and not remembered as
    seen); once `remember_message` names it, it counts against that message's domain, not
    the one the event claims."""
    state = state_factory()
    complaint = event(FeedbackKind.COMPLAINED, domain=None, message_id="<m1@acme.fr>")
    claiming = event(FeedbackKind.COMPLAINED, "b@x.net", domain="other.fr",
                     message_id="m1@acme.fr")
    unknown = event(FeedbackKind.COMPLAINED, "c@x.net", message_id="<m2@acme.fr>")

    async def scenario():
        result = await state.record_feedback([complaint], False)
        assert (result.new, result.dropped) == ([], [complaint])
        await remember(state, "<m1@acme.fr>")
        result = await state.record_feedback([complaint, claiming, unknown], False)
        assert result.new == [(complaint, "acme.fr"), (claiming, "acme.fr")]
        assert result.dropped == [unknown]
        assert await state.rates("other.fr") == Rates(0, 0, 0)
    asyncio.run(scenario())


def test_a_remembered_message_id_is_forgotten_after_the_window(state_factory):
    """`reevaluate()` forgets Message-IDs remembered longer ago than `reputation.window`: an
    untrusted event naming one is dropped then."""
    state = state_factory(reputation={"window": "1d"})
    complaint = event(FeedbackKind.COMPLAINED, domain=None, message_id="<m1@acme.fr>")

    async def scenario():
        await remember(state, "<m1@acme.fr>")
        state_factory.clock.advance(DAY + 1)
        await state.reevaluate()
        return await state.record_feedback([complaint], False)
    result = asyncio.run(scenario())
    assert (result.new, result.dropped) == ([], [complaint])


def test_a_trusted_event_with_no_sender_domain_is_dropped(state_factory):
    """With no sender domain, no known Message-ID and not exactly one configured domain, an
    event lands in `dropped` and changes nothing."""
    state = state_factory()
    bounce = event(FeedbackKind.BOUNCED_HARD, domain=None)

    async def scenario():
        result = await state.record_feedback([bounce], True)
        assert (result.new, result.dropped, result.suppressed) == ([], [bounce], [])
        assert await state.suppressions() == []
    asyncio.run(scenario())


def test_a_trusted_event_with_no_sender_domain_counts_for_the_only_configured_one(
        state_factory, tmp_path):
    """With one configured domain, an event that names no sender domain is that domain's."""
    state = state_factory(domains={"acme.fr": {"route": "files"}},
                          routes={"files": {"outbox": str(tmp_path / "outbox")}})
    bounce = event(FeedbackKind.BOUNCED_HARD, domain=None)
    result = asyncio.run(state.record_feedback([bounce], True))
    assert result.new == [(bounce, "acme.fr")]


def test_soft_bounces_suppress_at_the_configured_count(state_factory):
    """With `feedback.soft_bounces.count` 3, the third soft bounce of a recipient suppresses it."""
    state = state_factory(feedback={"soft_bounces": {"count": 3, "within": "7d"}})

    async def scenario():
        suppressed = []
        for _ in range(3):
            result = await state.record_feedback([event(FeedbackKind.BOUNCED_SOFT)], True)
            suppressed.append(result.suppressed)
        return suppressed, await state.suppression("a@x.net", "acme.fr")
    suppressed, reason = asyncio.run(scenario())
    assert suppressed == [[], [], [("acme.fr", "soft_bounces", "dsn")]]
    assert reason is SuppressionReason.SOFT_BOUNCES


@pytest.mark.parametrize("on_limit, scope", [("pause_bulk", "bulk"), ("pause_all", "all")])
def test_complaints_over_the_limit_pause_the_domain_until_back_under_it(
        state_factory, on_limit, scope):
    """1 complaint for 500 delivered (0.20%: over the 0.10% limit, under the 0.30% stop)
    pauses the domain with `on_limit`'s scope; `reevaluate()` keeps it while the rate
    holds, and lifts it once the window holds only clean deliveries."""
    state = state_factory(reputation={"window": "1d", "min_volume": 100, "on_limit": on_limit})

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 500))
        result = await state.record_feedback([event(FeedbackKind.COMPLAINED)], True)
        assert [(d, s) for d, s, _ in result.paused] == [("acme.fr", scope)]
        assert (await state.paused())["acme.fr"][0] == scope
        assert (await reserve(state, 1, bulk=True)).hold.reason is HoldReason.PAUSED
        assert (await reserve(state, 1)).count == (1 if scope == "bulk" else 0)
        assert (await state.reevaluate()).lifted == []
        state_factory.clock.advance(2 * DAY)
        await state.record_outcome(delivered("Q2:1", 500))
        result = await state.reevaluate()
        assert [d for d, _ in result.lifted] == ["acme.fr"]
        assert await state.paused() == {}
    asyncio.run(scenario())


def test_an_operators_resume_holds_until_newer_complaints_or_bounces(state_factory):
    """A domain paused by the reputation rules and resumed by the operator stays resumed at
    `reevaluate()` although its rate has not changed; a complaint received after the resume
    judges it again (2 for 500: over the 0.30% stop, so `on_stop` pauses all of it)."""
    state = state_factory(reputation={"window": "1d", "min_volume": 100})

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 500))
        await state.record_feedback([event(FeedbackKind.COMPLAINED)], True)
        assert await state.resume("acme.fr") is True
        assert (await state.reevaluate()).paused == []
        assert await state.paused() == {}
        state_factory.clock.advance(60)
        result = await state.record_feedback([event(FeedbackKind.COMPLAINED, "b@x.net")], True)
        assert [(d, s) for d, s, _ in result.paused] == [("acme.fr", "all")]
        assert (await state.paused())["acme.fr"][0] == "all"
    asyncio.run(scenario())


def test_complaints_over_the_limit_only_alert_when_so_configured(state_factory):
    """With `on_limit: alert`, complaints over the limit give an alert and pause nothing."""
    state = state_factory(reputation={"min_volume": 100, "on_limit": "alert"})

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 500))
        result = await state.record_feedback([event(FeedbackKind.COMPLAINED)], True)
        assert (result.paused, [d for d, _ in result.alerts]) == ([], ["acme.fr"])
        assert await state.paused() == {}
    asyncio.run(scenario())


def test_too_little_volume_is_not_judged(state_factory):
    """Under `reputation.min_volume` deliveries, complaints pause nothing."""
    state = state_factory(reputation={"min_volume": 1000})

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 10))
        result = await state.record_feedback([event(FeedbackKind.COMPLAINED)], True)
        assert (result.paused, result.alerts) == ([], [])
        assert await state.paused() == {}
    asyncio.run(scenario())


# --- rates ---------------------------------------------------------------------------------

def test_rates_count_deliveries_complaints_and_hard_bounces_within_the_window(state_factory):
    """`rates(d)`: recipients delivered, complaints and hard bounces within
    `reputation.window` (7 days) for that domain only; soft bounces are not counted."""
    state = state_factory()
    clock = state_factory.clock

    async def scenario():
        await state.record_outcome(delivered("Q1:1", 100))
        clock.advance(10 * DAY)
        now = clock.now()
        await state.record_outcome(delivered("Q2:1", 40))
        await state.record_feedback([
            event(FeedbackKind.COMPLAINED, "a@x.net", at=now),
            event(FeedbackKind.COMPLAINED, "b@x.net", at=TEN_AM),         # before the window
            event(FeedbackKind.BOUNCED_HARD, "c@x.net", at=now),
            event(FeedbackKind.BOUNCED_HARD, "d@x.net", at=now),
            event(FeedbackKind.BOUNCED_SOFT, "e@x.net", at=now),
            event(FeedbackKind.COMPLAINED, "a@x.net", domain="other.fr", at=now),
        ], True)
        return await state.rates("acme.fr"), await state.rates("other.fr")
    assert asyncio.run(scenario()) == (Rates(40, 1, 2), Rates(0, 1, 0))


# --- campaigns ------------------------------------------------------------------------------

def test_a_campaign_total_counts_nothing_until_the_submission_is_recorded(state_factory):
    """campaign_total only answers (a submission refused after it must not count);
    record_accepted counts."""
    state = state_factory()

    async def scenario():
        totals = [await state.campaign_total("acme.fr", "c1", 5) for _ in range(2)]
        await state.record_accepted("acme.fr", "c1", 5, "")
        return totals + [await state.campaign_total("acme.fr", "c1", 1)]
    assert asyncio.run(scenario()) == [5, 5, 6]


def test_count_campaign_totals_within_the_window_and_survives_a_restart(state_factory):
    """Each count returns the campaign's running total within `limits.bulk.window` (24h);
    the counts survive a restart, and those older than the window are forgotten."""
    state = state_factory()
    clock = state_factory.clock

    async def scenario():
        nonlocal state
        assert await count(state, "c1", 3) == 3
        assert await count(state, "c1", 4) == 7
        assert await count(state, "c2", 5) == 5
        state = await state_factory.restart(state)        # close() makes the counts durable
        clock.advance(12 * 3600)
        assert await count(state, "c1", 1) == 8
        clock.advance(13 * 3600)                          # the first counts are 25h old
        assert await count(state, "c1", 1) == 2
        state = await state_factory.restart(state)
        clock.advance(12 * 3600)                          # those at +12h are 25h old
        assert await count(state, "c1", 1) == 2
        assert await count(state, "c2", 1) == 1
    asyncio.run(scenario())


# --- writes not waited for -----------------------------------------------------------------

def test_writes_not_waited_for_are_stored_once_a_later_write_is(state_factory):
    """A campaign count and an outcome not yet awaited are stored, in submission order, by the
    time a write submitted after them completes: another process sees both."""
    state = state_factory(limits=WARMUP)
    other = state_factory.another_process()

    async def scenario():
        await count(state, "c1", 3)
        counted = state.record_outcome(delivered("Q1:1", 2))
        await state.suppress("a@x.net", "acme.fr", SuppressionReason.MANUAL)
        seen = (await ramp(other)).today, await count(other, "c1", 1)
        await counted
        return seen
    assert asyncio.run(scenario()) == (2, 4)


# --- DMARC aggregate reports ------------------------------------------------------------

def dmarc_row(source_ip: str, count: int, aligned: bool = True) -> Row:
    """One source's messages: with `aligned`, an aligned DKIM pass, else both failing."""
    return Row(source_ip, count, "none", "pass" if aligned else "fail", "fail", "acme.fr",
               "bounce.acme.fr", (AuthResult("acme.fr", "pass" if aligned else "fail", "s1"),),
               (AuthResult("bounce.acme.fr", "fail", scope="mfrom"),),
               () if aligned else ("forwarded",))


def dmarc_report(report_id: str, org: str = "google.com", domain: str = "acme.fr", *,
                 begin: float = MIDNIGHT - DAY, end: float = MIDNIGHT,
                 rows: tuple[Row, ...] = (dmarc_row("192.0.2.1", 10),
                                          dmarc_row("198.51.100.7", 3, aligned=False))
                 ) -> AggregateReport:
    """A receiver's report on `domain` for one period: by default 10 aligned, 3 failing."""
    return AggregateReport(org, f"dmarc@{org}", report_id, begin, end, domain, "none",
                           "quarantine", "r", "s", False, "7489", rows)


def test_a_dmarc_report_is_stored_under_its_domain_and_read_back_equal(state_factory):
    """A recorded report is new, and read back equal (rows, auth results and all), under its
    domain whatever the case the caller asks in; another domain has none."""
    state = state_factory()
    report = dmarc_report("r1")

    async def scenario():
        assert await state.record_dmarc_report(report) is True
        assert await state.dmarc_reports("acme.fr", 0) == [report]
        assert await state.dmarc_reports("ACME.Fr", 0) == [report]
        assert await state.dmarc_reports("other.fr", 0) == []
        assert await state.dmarc_totals(0) == {"acme.fr": (10, 3)}
    asyncio.run(scenario())


def test_a_dmarc_report_is_stored_under_its_domain_in_lower_case(state_factory):
    """A report whose policy domain is written in capitals is stored under the domain in
    lower case: one report for both spellings, counted under the lower-case domain."""
    state = state_factory()
    shouting = dmarc_report("r1", domain="ACME.FR")

    async def scenario():
        assert await state.record_dmarc_report(shouting) is True
        assert await state.record_dmarc_report(dmarc_report("r1")) is False
        assert await state.dmarc_reports("acme.fr", 0) == [shouting]
        assert await state.dmarc_totals(0) == {"acme.fr": (10, 3)}
    asyncio.run(scenario())


def test_a_duplicate_dmarc_report_is_refused_and_changes_nothing(state_factory):
    """The same (org, report id) for the same domain again, even with other rows and period,
    is a duplicate: False, and the first report and its totals stay as they were."""
    state = state_factory()
    first = dmarc_report("r1")
    again = dmarc_report("r1", begin=MIDNIGHT, end=TEN_AM, rows=(dmarc_row("203.0.113.9", 500),))

    async def scenario():
        assert await state.record_dmarc_report(first) is True
        assert await state.record_dmarc_report(again) is False
        assert await state.record_dmarc_report(first) is False
        assert await state.dmarc_reports("acme.fr", 0) == [first]
        assert await state.dmarc_totals(0) == {"acme.fr": (10, 3)}
    asyncio.run(scenario())


def test_a_report_id_is_another_report_from_another_org_or_for_another_domain(state_factory):
    """A report is known by (org, report id) within its domain: the same report id from
    another org, or from the same org about another domain, is stored too."""
    state = state_factory()
    google = dmarc_report("r1", "google.com")
    yahoo = dmarc_report("r1", "yahoo.com", begin=MIDNIGHT - DAY + 1)
    other = dmarc_report("r1", "google.com", domain="other.fr")

    async def scenario():
        assert [await state.record_dmarc_report(r) for r in (google, yahoo, other)] == [True] * 3
        assert await state.dmarc_reports("acme.fr", 0) == [google, yahoo]
        assert await state.dmarc_reports("other.fr", 0) == [other]
    asyncio.run(scenario())


def test_dmarc_reports_end_at_or_after_since_oldest_first(state_factory):
    """`dmarc_reports(d, since)`: the reports whose period ends at or after `since` (one
    ending exactly then included), by begin, then end, whatever order they came in."""
    state = state_factory()
    old = dmarc_report("old", begin=MIDNIGHT - 3 * DAY, end=MIDNIGHT - 2 * DAY)
    day = dmarc_report("day", begin=MIDNIGHT - DAY, end=MIDNIGHT)
    short = dmarc_report("short", "yahoo.com", begin=MIDNIGHT - DAY, end=MIDNIGHT - 3600)
    early = dmarc_report("early", "microsoft.com", begin=MIDNIGHT - 2 * DAY, end=MIDNIGHT)

    async def scenario():
        for report in (day, old, short, early):
            assert await state.record_dmarc_report(report)
        assert await state.dmarc_reports("acme.fr", 0) == [old, early, short, day]
        assert await state.dmarc_reports("acme.fr", MIDNIGHT - 3600) == [early, short, day]
        assert await state.dmarc_reports("acme.fr", MIDNIGHT - 3599) == [early, day]
        assert await state.dmarc_reports("acme.fr", MIDNIGHT + 1) == []
    asyncio.run(scenario())


def test_dmarc_totals_sum_aligned_and_failing_per_domain_since(state_factory):
    """`dmarc_totals(since)`: per domain, the aligned and failing messages of its reports
    ending at or after `since`; a domain without such reports is left out."""
    state = state_factory()

    async def scenario():
        two_days_ago = {"begin": MIDNIGHT - 3 * DAY, "end": MIDNIGHT - 2 * DAY}
        await state.record_dmarc_report(dmarc_report("a1", **two_days_ago))
        await state.record_dmarc_report(dmarc_report("a2"))
        await state.record_dmarc_report(dmarc_report("a3", "yahoo.com", rows=(
            dmarc_row("192.0.2.1", 7), dmarc_row("192.0.2.2", 2),
            dmarc_row("192.0.2.3", 1, aligned=False))))
        await state.record_dmarc_report(dmarc_report("o1", domain="other.fr", **two_days_ago))
        await state.record_dmarc_report(dmarc_report("e1", domain="empty.fr", rows=()))
        assert await state.dmarc_totals(0) == {"acme.fr": (29, 7), "other.fr": (10, 3),
                                               "empty.fr": (0, 0)}
        assert await state.dmarc_totals(MIDNIGHT) == {"acme.fr": (19, 4), "empty.fr": (0, 0)}
        assert await state.dmarc_totals(MIDNIGHT + 1) == {}
    asyncio.run(scenario())


def test_dmarc_reports_past_the_retention_are_forgotten_when_the_domain_gets_another(
        state_factory):
    """DMARC_RETENTION (180 days) after a report's period ended, the domain's next report
    makes the state forget it (also as a duplicate: `r1` again is new); a report that ended
    within the retention stays."""
    state = state_factory()
    clock = state_factory.clock
    old = dmarc_report("r1", begin=TEN_AM - 2 * DAY, end=TEN_AM - DAY)
    kept = dmarc_report("r2", begin=TEN_AM - DAY, end=TEN_AM)

    async def scenario():
        await state.record_dmarc_report(old)
        await state.record_dmarc_report(kept)
        clock.advance(DMARC_RETENTION)       # `old` ended a day past the retention, `kept` at it
        fresh = dmarc_report("r3", begin=clock.now() - DAY, end=clock.now())
        assert await state.record_dmarc_report(fresh) is True
        assert await state.dmarc_reports("acme.fr", 0) == [kept, fresh]
        assert await state.dmarc_totals(0) == {"acme.fr": (20, 6)}
        assert await state.record_dmarc_report(old) is True     # forgotten: new again
    asyncio.run(scenario())


def test_dmarc_reports_survive_a_restart_and_are_seen_by_another_process(state_factory):
    """A report recorded by one process is read, and refused as a duplicate, by another
    process at once and by the next one after a restart."""
    state = state_factory()
    other = state_factory.another_process()
    report = dmarc_report("r1")

    async def scenario():
        assert await state.record_dmarc_report(report) is True
        assert await other.dmarc_reports("acme.fr", 0) == [report]
        assert await other.dmarc_totals(0) == {"acme.fr": (10, 3)}
        assert await other.record_dmarc_report(report) is False
        fresh = await state_factory.restart(state)
        assert await fresh.dmarc_reports("acme.fr", 0) == [report]
        assert await fresh.dmarc_totals(0) == {"acme.fr": (10, 3)}
        assert await fresh.record_dmarc_report(report) is False
    asyncio.run(scenario())


# --- SQLite only: its database's migrations ----------------------------------------------

OLD_STATE = """
CREATE TABLE domain_days (
    domain TEXT NOT NULL,
    day INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, day)
) WITHOUT ROWID;
CREATE TABLE domain_state (
    domain TEXT PRIMARY KEY,
    first_send REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE feedback_events (
    dedupe_key TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
"""


def test_sqlite_a_state_from_before_per_provider_ramps_becomes_the_whole_domains_ramp(tmp_path):
    """SQLite only: `domain_days` and `domain_state` move to provider '' when SqliteState
    opens the database, keeping the volumes and the first send; feedback stored before
    `received` existed still counts; opening it again changes nothing."""
    directory = tmp_path / "spool"
    directory.mkdir()
    with sqlite3.connect(directory / "relay.sqlite3") as conn:
        conn.executescript(OLD_STATE)
        conn.executemany("INSERT INTO domain_days VALUES ('acme.fr', ?, ?)",
                         [(TODAY - 1, 3), (TODAY, 2)])
        conn.execute("INSERT INTO domain_state VALUES ('acme.fr', ?)", (TEN_AM - DAY,))
        conn.execute("INSERT INTO feedback_events VALUES ('k1', 'acme.fr', 'a@x.net',"
                     " 'bounced_hard', ?)", (TEN_AM,))
    conn.close()
    config = make_config(directory,
                         limits={"warmup": {"schedule": [5, 10, 20], "per_provider": False}})

    async def scenario(state: SqliteState):
        assert await ramp(state) == RampStatus("", 1, 2, 10, "warmup", None)
        assert await state.rates("acme.fr") == Rates(5, 0, 1)
        assert (await reserve(state, 9)).count == 8
    for _ in range(2):
        spool = Spool(directory)
        spool.start()
        try:
            asyncio.run(scenario(SqliteState(spool.db, config, FakeClock(TEN_AM))))
        finally:
            spool.close()
    with sqlite3.connect(directory / "relay.sqlite3") as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        ramps = conn.execute("SELECT domain, provider, day, delivered FROM ramp_days"
                             " ORDER BY day").fetchall()
    conn.close()
    assert not {"domain_days", "domain_state"} & tables
    assert ramps == [("acme.fr", "", TODAY - 1, 3), ("acme.fr", "", TODAY, 2)]


def test_sqlite_a_database_from_before_dmarc_reports_gets_their_table(tmp_path):
    """SQLite only: a database written before DMARC reports were kept gets `dmarc_reports`
    when SqliteState opens it, and stores them."""
    directory = tmp_path / "spool"
    directory.mkdir()
    with sqlite3.connect(directory / "relay.sqlite3") as conn:
        conn.executescript(OLD_STATE)
    conn.close()
    report = dmarc_report("r1")

    async def scenario(state: SqliteState):
        assert await state.record_dmarc_report(report) is True
        assert await state.dmarc_reports("acme.fr", 0) == [report]
    spool = Spool(directory)
    spool.start()
    try:
        asyncio.run(scenario(SqliteState(spool.db, make_config(directory), FakeClock(TEN_AM))))
    finally:
        spool.close()


def test_sqlite_reevaluate_forgets_the_reports_of_a_domain_that_gets_no_more(tmp_path):
    """SQLite only (on Redis the domain's keys expire): `reevaluate()` forgets every domain's
    reports past DMARC_RETENTION, also of a domain no report comes for any more."""
    directory = tmp_path / "spool"
    clock = FakeClock(TEN_AM)
    spool = Spool(directory)
    spool.start()

    async def scenario(state: SqliteState):
        await state.record_dmarc_report(dmarc_report("r1", domain="gone.fr"))
        clock.advance(DMARC_RETENTION + DAY)
        assert await state.dmarc_reports("gone.fr", 0) != []      # nothing came: still there
        await state.reevaluate()
        assert await state.dmarc_reports("gone.fr", 0) == []
    try:
        asyncio.run(scenario(SqliteState(spool.db, make_config(directory), clock)))
    finally:
        spool.close()

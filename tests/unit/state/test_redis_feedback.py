"""relay/state/lua/feedback.lua against SqliteState's feedback rules: the same events, the
same suppressions, day health and pause decisions.

A real redis-server and the embedded state (a real SQLite database) are given the same
deliveries (through lua/outcome.lua and record_outcome) and then the same batches of
feedback events (random kinds, recipients, times, trusted or not; hypothesis,
derandomized). After each batch both must agree on which events were new, who was
suppressed and why, whether the domain was paused, lifted or alerted (and the reason's
words), the suppression list, and the days that no longer count toward the warm-up.
"""
from __future__ import annotations

import asyncio
import itertools

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.clock import DAY, day_of
from relay.config import Config
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.spool.store import Spool
from relay.state import Outcome, tables
from relay.state.redis_scripts import Scripts, prefix
from relay.state.sqlite import SqliteState
from tests.fakes.clock import FakeClock

START = 20_000 * DAY + 10 * 3600
DOMAIN = "acme.fr"
KINDS = [k for k in FeedbackKind if k not in (FeedbackKind.DELIVERED, FeedbackKind.DEFERRED)]


@st.composite
def configs(draw) -> dict:
    return {"reputation": {"window": draw(st.sampled_from(["1d", "7d"])),
                           "min_volume": draw(st.sampled_from([0, 10, 50])),
                           "on_limit": draw(st.sampled_from(["pause_bulk", "pause_all", "alert"])),
                           "on_stop": draw(st.sampled_from(["pause_bulk", "pause_all", "alert"]))},
            "feedback": {"soft_bounces": {"count": draw(st.integers(1, 3)), "within": "2d"}}}


batches = st.lists(st.tuples(
    st.sampled_from([0, 60, 3600, DAY]),                            # seconds before the batch
    st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 5),   # kind, recipient
                       st.sampled_from([0, -60, -DAY, -3 * DAY]),   # when, from now
                       st.integers(0, 3)),                          # which event (dedupe)
             min_size=1, max_size=6),
    st.booleans(),                                                  # trusted
), min_size=1, max_size=8)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(config=configs(), deliveries=st.lists(st.sampled_from([0, 5, 40, 400]), min_size=4,
                                             max_size=4), script=batches)
def test_the_script_keeps_the_embedded_states_feedback_rules(redis_url, tmp_path_factory,
                                                             config, deliveries, script):
    """`deliveries`: recipients delivered 3, 2, 1 days before the start and on its day."""
    directory = tmp_path_factory.mktemp("spool")
    config = Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(directory)}, "domains": {DOMAIN: {"route": "r"}, "b.fr": {"route": "r"}},
        "routes": {"r": {"outbox": str(directory / "outbox")}}, **config})
    asyncio.run(_compare(redis_url, directory, config, deliveries, script))


async def _compare(url, directory, config, deliveries, script) -> None:
    clock = FakeClock(START - 3 * DAY)
    spool = Spool(directory)
    spool.start()
    embedded = SqliteState(spool.db, config, clock)
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    shared = Scripts(client)
    serial = itertools.count()
    try:
        for n in deliveries:                       # three days before, ..., the start's day
            if n:
                outcome = Outcome(f"o{next(serial)}", DOMAIN, {"": n}, {"": n})
                await embedded.record_outcome(outcome)
                await shared.record_outcome(config.reputation, outcome, "r", clock.now())
            clock.advance(DAY)
        clock.t = START
        for wait, specs, trusted in script:
            clock.advance(wait)
            events = [FeedbackEvent(kind, f"r{who}@example.net", "test", clock.now() + at,
                                    f"<m{which}@acme.fr>", "", None, f"{kind}:{who}:{at}:{which}",
                                    DOMAIN) for kind, who, at, which in specs]
            if not trusted:                        # counted only for a message relay sent
                for event in events:
                    await embedded.record_accepted(DOMAIN, "-", 0, event.message_id)
            want = await embedded.record_feedback(events, trusted)
            got = await shared.record_feedback(config, DOMAIN, events, trusted, clock.now())
            what = (wait, specs, trusted, clock.now())
            assert [e.dedupe_key for e, _ in want.new] == [
                e.dedupe_key for e, new in zip(events, got.new) if new], what
            assert [(d, r) for d, r, _ in want.suppressed] == [
                (DOMAIN, reason) for _, reason in got.suppressed], what
            assert [(s, r) for _, s, r in want.paused] == (
                [(got.scope, got.reason)] if got.action == "paused" else []), what
            assert [r for _, r in want.lifted] == ([got.reason] if got.action == "lifted" else []), what
            assert [r for _, r in want.alerts] == ([got.reason] if got.action == "alert" else []), what
            assert await _suppressed(embedded) == await _shared_suppressed(client), what
            assert await _unhealthy(embedded, config, clock) == await _shared_unhealthy(
                client, clock), what
    finally:
        await client.aclose()
        spool.close()


async def _suppressed(state: SqliteState) -> dict[str, str]:
    return {recipient: reason.value for recipient, _, reason, _ in await state.suppressions(DOMAIN)}


async def _shared_suppressed(client) -> dict[str, str]:
    return {r.decode(): v.decode().split("|")[0]
            for r, v in (await client.hgetall(prefix(DOMAIN) + ":supp")).items()}


async def _unhealthy(state: SqliteState, config: Config, clock: FakeClock) -> set[int]:
    now = clock.now()
    found = await state.db.read(lambda conn: tables.unhealthy(conn, config.reputation, now, 0))
    return set(found.get(DOMAIN, {}))


async def _shared_unhealthy(client, clock: FakeClock) -> set[int]:
    """The days marked, and those of a pause still in effect (decide.lua adds them)."""
    days = {int(d) for d in await client.smembers(prefix(DOMAIN) + ":unhealthy")}
    since = await client.hget(prefix(DOMAIN) + ":pause", "policy_since")
    if since is not None:
        days |= set(range(day_of(float(since)), day_of(clock.now()) + 1))
    return days


def test_hard_bounces_over_the_stop_at_exactly_min_volume(redis_url, tmp_path):
    """40 delivered, min_volume 40 (judged: not under it), 3 hard bounces (7.5%, over the 5%
    stop) and no complaint: on_stop pauses all mail, on Redis as in SQLite."""
    config = Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(tmp_path)}, "domains": {DOMAIN: {"route": "r"}},
        "routes": {"r": {"outbox": str(tmp_path / "outbox")}},
        "reputation": {"min_volume": 40, "on_limit": "alert", "on_stop": "pause_all"}})
    bounces = [(FeedbackKind.BOUNCED_HARD, who, 0, 0) for who in range(3)]
    asyncio.run(_compare(redis_url, tmp_path, config, [0, 0, 0, 40], [(60, bounces, True)]))

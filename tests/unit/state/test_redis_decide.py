"""relay/state/lua/decide.lua against Governor.decide: the same questions, the same answers.

A real redis-server (tests/fakes/redis_server.py) and an in-memory Governor are asked the
same sequence of reservations (random limits, domains, streams, provider mixes and times,
hypothesis, derandomized), with each grant's outcome reported to both (on Redis by `lua/outcome.lua`, twice: the
second counts nothing) as the delivery pipeline does: delivered recipients count toward
the day, the rest is released. Every
decision must be equal: grants per provider, the cap hold, what a rate holds back and until
when. The script is the shared state's half of `reserve`; this is what makes a limit mean
the same in a fleet as on one node.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.clock import day_of
from relay.config import Limits, Reputation
from relay.governor.governor import Governor
from relay.state import Outcome
from relay.state.redis_scripts import RESERVATION_LIFETIME, Scripts, prefix
from tests.fakes.clock import FakeClock

START = 20_000 * 86400 + 10 * 3600
DOMAINS = ("acme.fr", "shop.example")
PROVIDERS = ("google", "microsoft", "other")
RATES = ("3/min", "30/min", "600/min", "5/s", "100/h")


@st.composite
def limit_sets(draw) -> dict:
    rates = {"default": draw(st.sampled_from(RATES))} if draw(st.booleans()) else {}
    return {"domain_rate": rates,
            "bulk": {"rate": draw(st.sampled_from(RATES)),
                     "reserve": f"{draw(st.sampled_from([0, 20, 50]))}%"},
            "warmup": {"schedule": draw(st.lists(st.integers(1, 60), min_size=1, max_size=5)
                                        | st.just([])),
                       "per_provider": draw(st.booleans())},
            "spike": {"max_growth": draw(st.none() | st.sampled_from([1.5, 2.0]))}}


steps = st.lists(st.tuples(
    st.integers(0, 1),                                   # domain
    st.booleans(),                                       # bulk
    st.lists(st.sampled_from(PROVIDERS), min_size=1, max_size=40),   # recipients' providers
    st.sampled_from([0, 1, 7, 61, 3600, 86400]),         # seconds before this step
    st.integers(0, 3),                                   # recipients the route defers
    st.booleans(),                                       # its outcome comes after the next step
), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(limits=limit_sets(), history=st.sampled_from([0, 0, 1, 2, 3, 8, 12]),
       volume=st.sampled_from([0, 5, 40, 300]), unhealthy=st.sets(st.integers(-10, 3)),
       script=steps)
def test_the_script_decides_as_the_governor_does(redis_url, limits, history, volume, unhealthy,
                                                 script):
    """`history` days since the whole domain's first send (its ramp of before per-provider
    caps), `volume` delivered on each of them (and today), `unhealthy` days around today."""
    limits = Limits.model_validate(limits)
    asyncio.run(_compare(redis_url, limits, history, volume, unhealthy, script))


async def _compare(url, limits, history, volume, unhealthy, script) -> None:
    clock = FakeClock(START)
    today = day_of(START)
    bad_days = {today + d for d in unhealthy}
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    first = {d: START - history * 86400 for d in DOMAINS} if history else {}
    days = range(today - history, today + 1) if history and volume else range(0)
    volumes = {(d, day): volume for d in DOMAINS for day in days}
    governor = Governor(limits, clock, first, volumes, None, {d: bad_days for d in DOMAINS})
    for domain in DOMAINS:
        if history:
            await client.hset(prefix(domain) + ":first", "", repr(START - history * 86400))
        for day in days:
            await client.hset(prefix(domain) + ":vol", f"|{day}", volume)
        for day in bad_days:                 # a pause held those days
            await client.hset(prefix(domain) + ":health", f"{day}|p", 1)
            await client.sadd(prefix(domain) + ":unhealthy", day)
    decider = Scripts(client)
    serial = itertools.count()
    later: list = []
    try:
        for d, bulk, providers, wait, deferred, keep_open in script:
            if wait >= RESERVATION_LIFETIME:      # an attempt never lasts that long: on Redis
                for outcome in later:             # its reservation would have expired
                    await _outcome(governor, decider, clock, *outcome)
                later = []
            clock.advance(wait)
            domain = DOMAINS[d]
            wanted: dict[str, int] = {}
            for provider in (providers if limits.caps_per_provider else [""] * len(providers)):
                wanted[provider] = wanted.get(provider, 0) + 1
            reservation = f"r{next(serial)}"
            expected = governor.decide(domain, wanted, bulk, clock.now())
            got = await decider.decide(limits, domain, wanted, bulk, reservation, clock.now())
            assert dataclasses.replace(got, epoch=None) == expected, (domain, bulk, wanted, clock.now())
            for outcome in later:                 # the one kept open over this step
                await _outcome(governor, decider, clock, *outcome)
            later = [(domain, reservation, expected.granted, deferred)]
            if not keep_open:
                await _outcome(governor, decider, clock, *later.pop())
    finally:
        await client.aclose()


async def _outcome(governor, decider, clock, domain: str, reservation: str,
                   granted: dict[str, int], deferred: int) -> None:
    """The attempt's outcome, to both: the last `deferred` of the grant were not delivered."""
    left = deferred
    delivered = {}
    for provider, n in reversed(list(granted.items())):
        undelivered = min(left, n)
        left -= undelivered
        delivered[provider] = n - undelivered
        governor.delivered(domain, n - undelivered, n, provider)
    outcome = Outcome(f"{reservation}:1", domain, dict(granted), delivered)
    reputation = Reputation()
    assert await decider.record_outcome(reputation, outcome, reservation, clock.now())
    assert not await decider.record_outcome(reputation, outcome, reservation, clock.now())


def test_a_provider_ramp_counts_what_the_whole_domain_sent_as_the_governor_does(redis_url):
    """Caps per provider on a domain ramped as a whole until yesterday (15 sent today before
    the switch): google's day-1 cap of 20 has 5 left, on Redis as in memory."""
    limits = Limits.model_validate({"warmup": {"schedule": [10, 20, 40], "per_provider": True}})
    script = [(0, False, ["google"] * 12, 0, 0, False), (0, False, ["microsoft"] * 3, 5, 0, True),
              (0, True, ["google", "other"] * 4, 60, 1, False)]
    asyncio.run(_compare(redis_url, limits, 1, 15, set(), script))


def test_a_pause_made_anywhere_holds_at_the_next_decision(redis_url):
    """The script reads the domain's pause at each decision: the operator's holds all mail,
    the reputation rules' bulk pause holds bulk mail only; nothing is counted meanwhile."""
    limits = Limits.model_validate({"warmup": {"schedule": [5], "per_provider": False}})

    async def scenario():
        async with aioredis.Redis.from_url(redis_url) as client:
            await client.flushall()
            decider, pause = Scripts(client), prefix("acme.fr") + ":pause"
            await client.hset(pause, mapping={"policy_scope": "bulk", "policy_reason": "complaints",
                                              "policy_since": repr(START)})
            bulk = await decider.decide(limits, "acme.fr", {"": 2}, True, "r1", START)
            transactional = await decider.decide(limits, "acme.fr", {"": 2}, False, "r2", START)
            await client.hset(pause, mapping={"op_reason": "investigating", "op_since": repr(START)})
            held = await decider.decide(limits, "acme.fr", {"": 2}, False, "r3", START)
            return bulk, transactional, held
    bulk, transactional, held = asyncio.run(scenario())
    assert (bulk.granted, bulk.paused) == ({"": 0}, "complaints")
    assert (transactional.granted, transactional.paused) == ({"": 2}, None)
    assert (held.granted, held.paused) == ({"": 0}, "investigating")

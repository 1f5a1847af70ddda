"""DMARC aggregate reports on Redis, beyond the contract (`test_contract.py`): where they are
kept, and what happens while Redis does not answer.

Each domain's reports are on its own hash-tagged keys, which expire when its newest report
would be forgotten, so a domain no report comes for any more leaves nothing behind; the
domains are listed in `relay:dmarc:domains` for the metrics. With Redis down, storing or
reading a report raises StateError at once and nothing waits in the outbox: the receiver
that sent the report retries on our 451.
"""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from relay.config import Config
from relay.spool.store import Spool
from relay.state import DMARC_RETENTION, StateError
from relay.state.redis import DMARC_DOMAINS, RedisState
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import RedisServer
from tests.unit.state.test_contract import DAY, MIDNIGHT, TEN_AM, dmarc_report


@pytest.fixture
def config(tmp_path) -> Config:
    return Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(tmp_path / "spool")}})


def test_a_domains_reports_are_on_its_keys_and_expire_with_the_newest(tmp_path, config):
    """The report is in `relay:{d:acme.fr}:dmarc` (body), `:dmarc:end` (by period end) and
    `:dmarc:sum` (totals); all three expire DMARC_RETENTION after the newest report's
    period ends, or after now when it has ended (a later report pushes the expiry back);
    the domain is listed."""
    spool = Spool(tmp_path / "spool")
    spool.start()
    with RedisServer(tmp_path / "redis") as server:
        async def scenario():
            state = RedisState(aioredis.Redis.from_url(server.url), config, FakeClock(TEN_AM),
                               spool.db)
            await state.record_dmarc_report(dmarc_report("r1", "Google.com", end=MIDNIGHT))
            keys = ["relay:{d:acme.fr}:dmarc", "relay:{d:acme.fr}:dmarc:end",
                    "relay:{d:acme.fr}:dmarc:sum"]
            first = [await state.client.ttl(k) for k in keys]
            await state.record_dmarc_report(dmarc_report("r2", end=TEN_AM + DAY))
            later = [await state.client.ttl(k) for k in keys]
            body = await state.client.hgetall(keys[0])
            sums = await state.client.hgetall(keys[2])
            listed = await state.client.smembers(DMARC_DOMAINS)
            await state.close()
            return first, later, body, sums, listed
        first, later, body, sums, listed = asyncio.run(scenario())
    spool.close()
    assert all(DMARC_RETENTION - 5 <= t <= DMARC_RETENTION for t in first)   # ended: from now
    assert all(DMARC_RETENTION + DAY - 5 <= t <= DMARC_RETENTION + DAY for t in later)
    assert set(body) == {b'["Google.com","r1"]', b'["google.com","r2"]'}
    assert sums == {b'["Google.com","r1"]': b"10|3", b'["google.com","r2"]': b"10|3"}
    assert listed == {b"acme.fr"}


def test_with_redis_down_reports_are_refused_with_a_state_error(tmp_path, config):
    """Redis killed: recording a report, reading them and their totals raise StateError, and
    nothing is kept in the outbox; once Redis answers again, the report is stored."""
    spool = Spool(tmp_path / "spool")
    spool.start()
    report = dmarc_report("r1")
    with RedisServer(tmp_path / "redis") as server:
        async def down(state: RedisState) -> int:
            server.kill()
            for call in (state.record_dmarc_report(report), state.dmarc_reports("acme.fr", 0),
                         state.dmarc_totals(0), state.record_dmarc_report(report)):
                with pytest.raises(StateError):
                    await call
            kept = await state.outbox.size()
            await state.close()
            return kept

        async def back(state: RedisState) -> tuple:
            stored = await state.record_dmarc_report(report)
            found = await state.dmarc_reports("acme.fr", 0)
            await state.close()
            return stored, found

        state = RedisState(aioredis.Redis.from_url(server.url), config, FakeClock(TEN_AM), spool.db)
        assert asyncio.run(down(state)) == 0
        server.start()
        state = RedisState(aioredis.Redis.from_url(server.url), config, FakeClock(TEN_AM), spool.db)
        assert asyncio.run(back(state)) == (True, [report])
    spool.close()


def test_a_forgotten_report_leaves_nothing_in_the_domains_keys(tmp_path, config):
    """Past the retention, the next report of the domain removes the old one's body, its
    place by end time and its totals: the three keys hold the live reports only."""
    spool = Spool(tmp_path / "spool")
    spool.start()
    clock = FakeClock(TEN_AM)
    with RedisServer(tmp_path / "redis") as server:
        async def scenario():
            state = RedisState(aioredis.Redis.from_url(server.url), config, clock, spool.db)
            await state.record_dmarc_report(dmarc_report("r1", end=TEN_AM - DAY))
            clock.advance(DMARC_RETENTION)
            await state.record_dmarc_report(dmarc_report("r2", end=clock.now()))
            p = "relay:{d:acme.fr}:dmarc"
            held = (await state.client.hkeys(p), await state.client.zrange(p + ":end", 0, -1),
                    await state.client.hkeys(p + ":sum"))
            await state.close()
            return held
        held = asyncio.run(scenario())
    spool.close()
    assert held == ([b'["google.com","r2"]'],) * 3

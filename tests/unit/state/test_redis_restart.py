"""A Redis restarted empty (a real redis-server killed and started again, without
persistence) forgets the fleet's counters; the nodes refill them from what each knows before
anything is granted again, so a limit still holds.

Two nodes (two RedisStates on one redis-server, one FakeClock): with domain_rate 20/min,
node A grants 10 and node B 5. Redis restarts empty. A's next reservation finds the domain's
keys made anew: nothing is granted during the epoch's grace (held: the state is new), A
refills its 10 at once, B its 5 at its next refresh (the delivery process's, every 2 s);
after the grace A gets the 5 the minute has left, not 20.
"""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from relay.config import Config
from relay.governor.governor import HoldReason
from relay.spool.store import Spool
from relay.state import Outcome, StateError
from relay.state.redis import EPOCH_GRACE, RedisState
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import RedisServer

START = 20_000 * 86400 + 10 * 3600


def test_a_redis_restarted_empty_is_refilled_before_anything_is_granted(tmp_path):
    config = Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(tmp_path)},
        "limits": {"domain_rate": {"default": "20/min"},
                   "warmup": {"schedule": [1000], "per_provider": False}}})
    clock = FakeClock(START)
    spools = [Spool(tmp_path / name) for name in ("a", "b")]     # each node's own database
    for spool in spools:
        spool.start()
    with RedisServer(tmp_path / "redis") as server:
        async def scenario():
            a = RedisState(aioredis.Redis.from_url(server.url), config, clock, spools[0].db)
            b = RedisState(aioredis.Redis.from_url(server.url), config, clock, spools[1].db)
            for node, n in ((a, 10), (b, 5)):
                grant = await node.reserve("acme.fr", n, False, None)
                assert grant.count == n
                await node.record_outcome(Outcome(grant.reservation, "acme.fr", {"": n}, {"": n}))
            server.kill()
            server.start()                           # empty: save "" and no AOF
            for node in (a, b):                       # their connections died with it
                await _reconnected(node)
            clock.advance(1)
            held = await a.reserve("acme.fr", 20, False, None)
            await b.refresh()                         # B's delivery process, 2 s later at most
            clock.advance(EPOCH_GRACE)
            after = await a.reserve("acme.fr", 20, False, None)
            status = await a.domain_status("acme.fr")
            await a.close()
            await b.close()
            return held, after, status
        held, after, status = asyncio.run(scenario())
    for spool in spools:
        spool.close()
    assert held.count == 0 and held.hold.reason is HoldReason.STATE
    assert after.count == 5                           # 20/min less A's 10 and B's 5
    assert [r.today for r in status.ramps] == [15]    # the day's volume, refilled too


async def _reconnected(node: RedisState, timeout: float = 10.0) -> None:
    """The node's next calls reach the new Redis (after its RETRY_DOWN of not trying)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await node.check()
            return
        except StateError:
            assert asyncio.get_running_loop().time() < deadline, "redis did not come back"
            await asyncio.sleep(0.1)

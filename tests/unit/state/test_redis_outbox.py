"""The writes Redis does not take while it is down wait in the node's outbox, in its spool
database: they survive a restart of the node, and the listener (the process that heartbeats)
replays them, the delivery process's included, once Redis answers.

A real redis-server is killed; the delivery process's state records a hard bounce (a
feedback write) and the listener's state a suppression and an acceptance count, all kept in
the outbox; the listener process restarts (a new state on the same database, nothing in
memory); Redis starts again (empty); the new listener's heartbeat replays the three, once.
"""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from relay.config import Config
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.spool.store import Spool
from relay.state.redis import RedisState
from relay.state.suppressions import SuppressionReason
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import RedisServer

START = 20_000 * 86400 + 10 * 3600


def test_the_outbox_survives_a_node_restart_and_is_replayed_once(tmp_path):
    config = Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(tmp_path / "spool")}})
    clock = FakeClock(START)
    spool = Spool(tmp_path / "spool")
    spool.start()
    bounce = FeedbackEvent(FeedbackKind.BOUNCED_HARD, "dead@example.net", "upstream", START,
                           "<1@acme.fr>", "5.1.1 no such user", "5.1.1", "upstream:1", "acme.fr")

    def state() -> RedisState:
        return RedisState(aioredis.Redis.from_url(server.url), config, clock, spool.db)

    with RedisServer(tmp_path / "redis") as server:
        async def while_down() -> int:
            listener, delivery = state(), state()
            server.kill()
            result = await delivery.record_feedback([bounce])
            assert result.new == [] and result.suppressed == []      # not recorded yet
            assert await listener.suppress("gone@example.net", "acme.fr", SuppressionReason.MANUAL)
            assert await listener.suppression("gone@example.net", "acme.fr") is not None
            await listener.record_accepted("acme.fr", "newsletter", 150, "<2@acme.fr>")
            size = await listener.outbox.size()
            await listener.close()
            await delivery.close()
            return size
        assert asyncio.run(while_down()) == 3

        server.start()

        async def after_restart() -> tuple:
            listener = state()                       # a new process: nothing in memory
            await listener.heartbeat("a")
            await listener.heartbeat("a")            # a second replay finds nothing left
            left = await listener.outbox.size()
            async with aioredis.Redis.from_url(server.url) as client:
                suppressed = await client.hgetall("relay:{d:acme.fr}:supp")
                campaign = await client.hgetall("relay:{d:acme.fr}:camp:newsletter")
                bounced = await client.zcard("relay:{d:acme.fr}:fb:bounced_hard")
            await listener.close()
            return left, suppressed, campaign, bounced
        left, suppressed, campaign, bounced = asyncio.run(after_restart())
    spool.close()
    assert left == 0
    assert set(suppressed) == {b"gone@example.net", b"dead@example.net"}
    assert suppressed[b"gone@example.net"].startswith(b"manual|")
    assert sum(int(n) for n in campaign.values()) == 150
    assert bounced == 1

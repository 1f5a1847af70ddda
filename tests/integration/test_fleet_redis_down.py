"""A fleet node whose Redis stops answering (SIGSTOP: every call times out) keeps taking mail
into its spool, sends none of it (nothing the shared state has not granted), says so
(`/readyz` 200 "degraded", `relay_state_backend_up 0`), and delivers it once Redis answers
again (SIGCONT); a suppression made meanwhile holds on the node at once and reaches Redis
from the node's outbox.
"""
from __future__ import annotations

import asyncio
import time
import urllib.request

from relay.state.suppressions import SuppressionReason
from tests.conftest import message, readyz, submit, wait_until
from tests.fakes.redis_server import RedisServer


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_without_redis_mail_is_accepted_held_and_sent_once_it_is_back(tmp_path, make_relay,
                                                                       upstream, monkeypatch):
    with RedisServer(tmp_path / "redis") as redis:
        monkeypatch.setenv("RELAY_REDIS_URL", redis.url)
        node = make_relay(**{"state": {"backend": "redis", "node": "a", "timeout": "0.5s"},
                             "metrics": {"address": "127.0.0.1", "port": 0}})
        port = node.relay.metrics_port
        assert readyz(port)[0] == 200

        redis.freeze()
        assert submit(node.port("local"), "billing@acme.fr", ["late@example.net"], message()) == {}
        status, body = readyz(port)
        assert (status, body["status"]) == (200, "degraded") and body["checks"]["state"] != "ok"
        assert "relay_state_backend_up 0.0" in scrape(port)
        node.call(node.relay.state.suppress("gone@example.net", "acme.fr",
                                            SuppressionReason.MANUAL))
        assert node.call(node.relay.state.suppression("gone@example.net", "acme.fr")) is not None
        wait_until(lambda: [s for s in node.relay.spool.summaries() if s.next_attempt > time.time()],
                   timeout=20, what="the message held: the state did not grant it")
        assert upstream.messages == []

        redis.thaw()
        [sent] = upstream.wait_for(lambda msgs: msgs, timeout=30, what="delivery once Redis is back")
        assert sent.rcpt_tos == ["late@example.net"]
        assert readyz(port)[1]["status"] == "ready"
        assert "relay_state_backend_up 1.0" in scrape(port)

        async def stored() -> bytes | None:
            import redis.asyncio as aioredis
            async with aioredis.Redis.from_url(redis.url) as client:
                return await client.hget("relay:{d:acme.fr}:supp", "gone@example.net")
        wait_until(lambda: asyncio.run(stored()), timeout=10, what="the outbox's suppression in Redis")

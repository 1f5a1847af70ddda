"""tests/fakes/redis_server.py: a real redis-server, empty, on a unix socket; it can be
frozen (no answer within a timeout), thawed, killed and started again empty."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeout

from tests.fakes.redis_server import RedisServer


def client(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)


def test_a_started_server_answers_and_a_restart_after_a_kill_is_empty(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        async def write_then_read() -> bytes | None:
            async with client(server) as r:
                await r.set("k", "v")
                return await r.get("k")
        assert asyncio.run(write_then_read()) == b"v"
        server.kill()
        server.start()

        async def read() -> bytes | None:
            async with client(server) as r:
                return await r.get("k")
        assert asyncio.run(read()) is None


def test_a_frozen_server_times_out_and_answers_again_once_thawed(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        async def scenario() -> bytes:
            async with client(server) as r:
                await r.ping()
                server.freeze()
                with pytest.raises(RedisTimeout):
                    await r.get("k")
                server.thaw()
                await r.set("k", "back")
                return await r.get("k")
        assert asyncio.run(scenario()) == b"back"

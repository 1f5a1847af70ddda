"""`Batch` on a real redis-server: concurrent callers share round trips and each gets its
own reply; a command's error is its caller's alone; Redis gone is everyone's error."""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError

from relay.state.batch import Batch
from tests.fakes.redis_server import RedisServer


class Counting(aioredis.Redis):
    """A client that counts its pipelines: one round trip each."""
    round_trips = 0

    def pipeline(self, *args, **kwargs):
        Counting.round_trips += 1
        return super().pipeline(*args, **kwargs)


def test_concurrent_callers_share_round_trips_and_get_their_own_replies(tmp_path):
    with RedisServer(tmp_path) as server:
        async def scenario():
            client = Counting.from_url(server.url)
            await client.hset("supp", mapping={f"r{i}": f"v{i}" for i in range(0, 100, 2)})
            batch = Batch(client)
            replies = await asyncio.gather(*(batch("HGET", "supp", f"r{i}") for i in range(100)))
            many = await batch.many([("HINCRBY", "camp", 7, 3), ("EXPIRE", "camp", 60),
                                     ("HGETALL", "camp")])
            await client.aclose()
            return replies, many
        Counting.round_trips = 0
        replies, many = asyncio.run(scenario())
    assert replies == [f"v{i}".encode() if i % 2 == 0 else None for i in range(100)]
    assert many == [3, True, {b"7": b"3"}]
    assert Counting.round_trips <= 4          # not 101: the first alone, the rest together


def test_an_error_is_its_callers_alone_and_redis_gone_is_everyones(tmp_path):
    with RedisServer(tmp_path) as server:
        async def scenario():
            client = aioredis.Redis.from_url(server.url, socket_timeout=1,
                                             socket_connect_timeout=1)
            await client.set("text", "not a hash")
            batch = Batch(client)
            wrong, right = await asyncio.gather(batch("HGET", "text", "f"), batch("PING"),
                                                return_exceptions=True)
            server.kill()
            gone = await asyncio.gather(batch("PING"), batch("HGET", "supp", "x"),
                                        return_exceptions=True)
            await client.aclose()
            return wrong, right, gone
        wrong, right, gone = asyncio.run(scenario())
    assert isinstance(wrong, ResponseError) and right is True
    assert all(isinstance(e, ConnectionError) for e in gone), gone



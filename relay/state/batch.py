"""Round trips to Redis shared by concurrent callers (`Batch`), as the spool's writer shares
one fsync: the commands asked for while one round trip is under way leave together in the
next, one pipeline (not a transaction). Alone, a command leaves at once; under load, the
listener's sessions (a suppression lookup per RCPT, a campaign count and an acceptance
record per message) share a round trip, and its cost in the process's CPU, which is what
limits a node's throughput (redis-py: ~120 us of CPU for one command alone, ~25 us each in a
pipeline of ten; bench/README.md "Fleet").

A failure of the round trip (Redis unreachable, a timeout) is every waiting caller's
exception; a command's own error is its caller's alone.
"""
from __future__ import annotations

import asyncio

from redis.asyncio import Redis


class Batch:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._waiting: list[tuple[list[tuple], asyncio.Future]] = []
        self._sending = False
        self._task: asyncio.Future | None = None     # kept: the loop holds tasks weakly

    async def __call__(self, *command):
        """One command's reply, e.g. `await batch("HGET", key, field)`."""
        return (await self.many([command]))[0]

    def many(self, commands: list[tuple]) -> asyncio.Future:
        """The commands' replies (a list), in one round trip with whatever else waits."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((commands, future))
        if not self._sending:
            self._sending = True
            self._task = asyncio.ensure_future(self._send())
        return future

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for commands, _ in batch:
                            for command in commands:
                                pipe.execute_command(*command)
                        replies = await pipe.execute(raise_on_error=False)
                except Exception as exc:      # the round trip failed: every caller's error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                at = 0
                for commands, future in batch:
                    mine = replies[at:at + len(commands)]
                    at += len(commands)
                    if future.done():
                        continue
                    error = next((r for r in mine if isinstance(r, Exception)), None)
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(mine)
        finally:
            self._sending = False

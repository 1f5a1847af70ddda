"""The listener wakes the delivery process through a pipe: one byte for all the messages
queued in one turn of its event loop, written at the end of that turn."""
from __future__ import annotations

import asyncio
import os

from relay.outbound.process import DeliveryProcess


def test_wake_ups_of_one_loop_turn_are_one_byte():
    process = DeliveryProcess(config=None)
    read_end, process._wake_w = os.pipe()
    os.set_blocking(read_end, False)

    async def queued(messages: int) -> None:
        for _ in range(messages):
            process.wake()
        await asyncio.sleep(0)                # the turn ends
        await asyncio.sleep(0)

    try:
        asyncio.run(queued(6))
        assert os.read(read_end, 64) == b"!"
        asyncio.run(queued(2))                # a later turn wakes it again
        assert os.read(read_end, 64) == b"!"
    finally:
        os.close(read_end)
        os.close(process._wake_w)


def test_a_wake_up_due_when_the_pipe_is_closed_is_dropped():
    """A reload closes the pipe to the old process: the byte due has nowhere to go."""
    process = DeliveryProcess(config=None)
    read_end, process._wake_w = os.pipe()

    async def queued_then_reloaded() -> None:
        process.wake()
        process._close_pipe()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        asyncio.run(queued_then_reloaded())
        os.set_blocking(read_end, False)
        assert os.read(read_end, 64) == b""       # closed, nothing written
    finally:
        os.close(read_end)

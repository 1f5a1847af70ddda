"""A message larger than a warm-up day leaves over several days, on a fake clock.

The delivery pipeline is built as the delivery process builds it (`compose.build_delivery`),
but with a FakeClock, and runs in this test's event loop against the recording fake
provider over a real socket and a real SQLite spool. Warm-up `[10, 20, 40]`, one queued
message to 60 recipients on the domain's day 0: 10 leave that day, 20 on day 1, the last 30
on day 2, each in one transaction and in order; between days the rest is held (not an
attempt), and held time never counts toward max_age (`spool.max_age: 1h` here, days pass).
"""
from __future__ import annotations

import asyncio

import yaml

from relay import config as config_module
from relay.clock import DAY
from relay.compose import build_delivery
from relay.model import QueuedMessage, Recipient, new_queue_id
from tests.conftest import base_config, eventually, message
from tests.fakes.clock import FakeClock

RCPTS = [f"client{n:02}@example.net" for n in range(60)]
TEN_AM = 20_000 * DAY + 10 * 3600



def test_sixty_recipients_leave_10_20_30_over_three_days(tmp_path, upstream, server_cert, dkim_keys):
    data = base_config(tmp_path, upstream.port, server_cert, dkim_keys,
                       limits={"warmup": {"schedule": [10, 20, 40]}})
    config = config_module.parse(yaml.safe_dump(data), tmp_path)
    clock = FakeClock(TEN_AM)

    def delivered() -> int:
        return sum(len(m.rcpt_tos) for m in upstream.messages)

    async def scenario() -> None:
        spool, state, delivery = await build_delivery(config, clock)
        delivery.start()
        try:
            body = message(to="undisclosed-recipients:;").encode()
            await spool.enqueue(QueuedMessage(
                id=new_queue_id(clock.now()), mail_from="billing@acme.fr",
                recipients=[Recipient(r) for r in RCPTS], domain="acme.fr", route="provider",
                body=body, created=clock.now(), next_attempt=clock.now()))
            delivery.wake()
            def recorded(total: int) -> bool:
                """The attempt's outcome and hold are in the spool: the provider having the
                recipients is not enough (its 250 may still be on its way to the worker,
                which would then hold the rest from a clock already moved to the next day)."""
                return total == len(RCPTS) or [s.pending for s in spool.summaries()] == \
                    [len(RCPTS) - total]

            for day, total in ((0, 10), (1, 30), (2, 60)):
                clock.t = TEN_AM + day * DAY if day == 0 else (20_000 + day) * DAY + 1
                delivery.wake()
                await eventually(lambda: delivered() == total and recorded(total),
                                 f"{total} recipients by day {day}")
            await eventually(lambda: not spool.summaries(), "the spool to empty")
        finally:
            await delivery.stop(timeout=5)
            spool.close()

    asyncio.run(scenario())
    assert [m.rcpt_tos for m in upstream.messages] == [RCPTS[:10], RCPTS[10:30], RCPTS[30:]]
    assert sorted(upstream.rcpt_attempts.values()) == [1] * 60    # each tried once, none expired

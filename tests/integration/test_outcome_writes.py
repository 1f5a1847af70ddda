"""Step 5 of delivery when a write fails: the reservation ends once, each write is retried
alone, nothing is sent twice and no cap is passed.

The delivery pipeline is built as the delivery process builds it (`compose.build_delivery`)
on a FakeClock, against the recording fake provider over a real socket and a real SQLite
spool; the state's `record_outcome` is made to fail as a full disk would, once, or the DSN
build is made to raise. Warm-up `[4]` (per domain): what the cap lets through after the
failure shows whether recipients stayed counted "in flight".
"""
from __future__ import annotations

import asyncio

import pytest
import yaml

from relay import config as config_module
from relay.clock import DAY
from relay.compose import build_delivery
from relay.model import QueuedMessage, Recipient, new_queue_id
from relay.state import StateError
from tests.conftest import base_config, eventually, message
from tests.fakes.clock import FakeClock
from tests.fakes.dns_server import ZoneResolver

TEN_AM = 20_000 * DAY + 10 * 3600


@pytest.fixture
def config(tmp_path, upstream, server_cert, dkim_keys):
    data = base_config(tmp_path, upstream.port, server_cert, dkim_keys,
                       limits={"warmup": {"schedule": [4], "per_provider": False}})
    return config_module.parse(yaml.safe_dump(data), tmp_path)


def queued(clock: FakeClock, *rcpts: str) -> QueuedMessage:
    return QueuedMessage(id=new_queue_id(clock.now()), mail_from="billing@acme.fr",
                         recipients=[Recipient(r) for r in rcpts], domain="acme.fr",
                         route="provider", body=message().encode(), created=clock.now(),
                         next_attempt=clock.now())


def run(config, scenario):
    """`scenario(spool, state, delivery, clock)` with the pipeline started, then stopped."""
    clock = FakeClock(TEN_AM)

    async def main():
        spool, state, delivery = await build_delivery(config, clock, ZoneResolver({}))
        delivery.start()
        try:
            return await scenario(spool, state, delivery, clock)
        finally:
            await delivery.stop(timeout=5)
            await state.close()
            spool.close()
    return asyncio.run(main())


def test_an_outcome_write_that_fails_is_retried_alone_and_counts_once(config, upstream):
    """The count fails once while the spool's write of the same attempt (with the DSN of its
    bounced recipient) is taken: the count is written again, the spool's is not (a second
    insert of the DSN would fail forever), the message was sent once, and the day's volume
    is what was delivered (a, then the DSN to billing@): a later message gets the 2 left of
    the cap of 4."""
    async def scenario(spool, state, delivery, clock):
        real = state.record_outcome
        failures = []

        def failing_once(outcome):
            if not failures:
                failures.append(outcome.key)
                real(outcome)                          # the reservation ends in memory...
                done = asyncio.get_running_loop().create_future()
                done.set_exception(StateError("disk full"))   # ...but the write fails
                return done
            return real(outcome)
        state.record_outcome = failing_once
        await spool.enqueue(queued(clock, "a@example.net", "permfail@example.net"))
        delivery.wake()
        await eventually(lambda: len(upstream.messages) == 2 and not spool.summaries(),
                         "the first message and its DSN to leave the spool")
        await spool.enqueue(queued(clock, "c@example.net", "d@example.net", "e@example.net"))
        delivery.wake()
        # the provider's 250 comes before the outcome is written: wait for the attempt's
        # record (written after the outcome), the one recipient held left pending
        await eventually(lambda: len(upstream.messages) == 3
                         and [s.pending for s in spool.summaries()] == [1],
                         "the second message's grant, recorded")
        return failures, await state.domain_status("acme.fr")

    failures, status = run(config, scenario)
    assert len(failures) == 1
    assert [m.rcpt_tos for m in upstream.messages] == [["a@example.net"], ["billing@acme.fr"],
                                                       ["c@example.net", "d@example.net"]]
    assert [r.today for r in status.ramps] == [4]


def test_an_attempt_that_fails_after_its_grant_releases_it(config, upstream, monkeypatch):
    """Building the DSN raises after the route answered (a bounce): the delivered recipient
    counts, the bounced one is released, not left "in flight" until a restart."""
    async def scenario(spool, state, delivery, clock):
        def broken(*args):
            raise RuntimeError("signing failed")
        monkeypatch.setattr(delivery, "_dsn", broken)
        await spool.enqueue(queued(clock, "a@example.net", "permfail@example.net"))
        delivery.wake()
        async def counted() -> bool:
            return [r.today for r in (await state.domain_status("acme.fr")).ramps] == [1]
        await eventually(counted, "the attempt to end, its delivered recipient counted")
        await delivery.stop(timeout=5)             # nothing else in flight
        grant = await state.reserve("acme.fr", 5, False, None)
        return grant.count

    assert run(config, scenario) == 3          # cap 4, one delivered: nothing held in flight

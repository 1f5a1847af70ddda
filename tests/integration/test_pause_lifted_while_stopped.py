"""Mail held by a pause waits for the pause to be lifted, not for a timer: when the operator
resumes a domain while relay is stopped, the held mail leaves as soon as relay starts again
(the delivery process releases it at its start), not an hour later when the hold would end."""
from __future__ import annotations

import asyncio
import time

from relay.clock import SystemClock
from relay.compose import open_stores
from tests.conftest import message, submit, wait_until


def test_a_resume_while_relay_is_stopped_releases_the_held_mail_at_start(make_relay, upstream):
    relay = make_relay()
    relay.call(relay.relay.state.pause("acme.fr", "maintenance"))
    assert submit(relay.port("local"), "billing@acme.fr", ["held@example.net"], message()) == {}
    [held] = wait_until(lambda: [m for m in relay.relay.spool.summaries()
                                 if m.next_attempt > time.time() + 600],
                        timeout=15, what="the message to be held by the pause")
    relay.stop()

    spool, state = open_stores(relay.config, SystemClock())   # `relay domains resume acme.fr`
    spool.start()
    assert asyncio.run(state.resume("acme.fr"))
    spool.close()

    make_relay()                                    # the same spool, started again
    [delivered] = upstream.wait_for(lambda msgs: [m for m in msgs if "held@example.net" in m.rcpt_tos],
                                    timeout=15, what="the held message after the restart")
    assert delivered.rcpt_tos == ["held@example.net"]

"""`relay reload` replaces the delivery process; the domain rate's sliding window is saved in
the spool as the old process stops and read by the new one, so a reload is no way around
`limits.domain_rate`: with 2/h, the third message after a reload is held."""
from __future__ import annotations

import time

from tests.conftest import message, submit, wait_until


def test_the_domain_rate_holds_across_a_reload(make_relay, upstream):
    relay = make_relay(limits={"domain_rate": {"acme.fr": "2/h"}})
    smtp = relay.port("local")
    for i in range(2):
        assert submit(smtp, "billing@acme.fr", [f"first{i}@example.net"], message()) == {}
    upstream.wait_for(lambda msgs: len(msgs) == 2, what="two deliveries")

    old = relay.relay.delivery._proc.pid
    relay.call(relay.relay.delivery.reload(relay.config))
    wait_until(lambda: relay.relay.delivery._proc is not None and
               relay.relay.delivery._proc.pid != old, what="the new delivery process")

    assert submit(smtp, "billing@acme.fr", ["third@example.net"], message()) == {}
    [held] = wait_until(lambda: [m for m in relay.relay.spool.summaries()
                                 if m.next_attempt > time.time() + 3000],
                        timeout=15, what="the third message to be held by the rate")
    assert held.attempts == 0
    assert upstream.delivered_to("third@example.net") == []

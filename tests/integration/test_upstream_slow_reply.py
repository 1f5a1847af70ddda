"""A provider slower than the route's timeouts: the attempt ends after the configured wait
(`timeouts.connect` for the 220 greeting, `timeouts.data` for the reply to the final dot),
the recipient is deferred with a reply naming the wait, and the retry, on a new connection,
delivers. No delivery worker hangs on a silent provider.
"""
import json

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import Delay, MisbehavingUpstream

STALL = 30.0          # the fake's silence: far past the timeouts and the test's own waits


@pytest.mark.parametrize("point, reply", [
    ("greeting", "no reply within 0.4s connecting"),
    ("dot", "no reply within 0.4s at DATA (the provider may have the message"),
])
def test_reply_slower_than_the_timeout_defers_and_the_retry_delivers(make_relay, capfd, point, reply):
    """The first session stalls at `point`; relay gives up after 0.4s, not 30s."""
    with MisbehavingUpstream(script={point: Delay(STALL)}, faulty_sessions=1) as provider:
        relay = make_relay(**{"routes.provider": {
            "host": "127.0.0.1", "port": provider.port, "tls": "none", "max_connections": 1,
            "timeouts": {"connect": "0.4s", "session": "5s", "command": "5s", "data": "0.4s"}}})
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}

        # the retry's session opens within seconds: the stalled one was given up on
        wait_until(lambda: len(provider.sessions) >= 2, timeout=5, what="a second session")
        provider.wait_for(lambda msgs: [m for m in msgs if m.session == 1 and m.reply],
                          what="the message on the retry")
        wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")
        relay.stop()

    events = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if '"logger":"relay.events"' in line]
    [deferred] = [e for e in events if e["event"] == "deferred"]
    assert deferred["reply"].startswith(f"451 4.4.1 127.0.0.1:{provider.port}: {reply}")
    assert [e["event"] for e in events if e["event"] in ("delivered", "bounced")] == ["delivered"]

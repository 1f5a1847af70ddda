"""A provider answering 421 mid-session (RFC 5321 §3.8: service not available, closing the
channel) defers the recipients with that 421, and relay never uses the session again: no
RSET, no next transaction on it, only QUIT; the retry opens a new one and delivers.
"""
import json

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import MisbehavingUpstream, Reply

CLOSING = "421 4.7.0 fake-misbehaving: too busy, closing"


@pytest.mark.parametrize("point, command", [("mail", "MAIL"), ("rcpt", "RCPT"), ("dot", "DATA")])
def test_421_defers_with_the_providers_reply_and_ends_the_session(make_relay, capfd, point, command):
    """The 421 comes as the reply to `point`; the fake keeps the connection open after it,
    so going on with the session would show in its commands."""
    with MisbehavingUpstream(script={point: Reply(CLOSING)}, faulty_sessions=1) as provider:
        relay = make_relay(**{"routes.provider": {"host": "127.0.0.1", "port": provider.port,
                                                  "tls": "none", "max_connections": 1}})
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}

        provider.wait_for(lambda msgs: [m for m in msgs if m.session == 1 and m.reply],
                          what="the message on a second session")
        wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")
        relay.stop()
        first = provider.commands(0)

    refused_at = next(i for i, c in enumerate(first) if c.upper().startswith(command))
    assert first[refused_at + 1:] in ([], ["QUIT"]), first
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if '"logger":"relay.events"' in line]
    [deferred] = [e for e in events if e["event"] == "deferred"]
    assert deferred["reply"] == CLOSING
    assert [e["event"] for e in events if e["event"] in ("delivered", "bounced")] == ["delivered"]

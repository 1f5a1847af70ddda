"""The provider closes the connection after the final dot, before its reply: relay cannot
know whether the provider has the message, so the recipient is deferred and the message
sent again on a new connection. A duplicate is acceptable, a loss is not (RFC 5321
§4.5.3.2.6 says as much of a dot left unanswered).
"""
import json

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import Drop, MisbehavingUpstream


@pytest.fixture
def provider():
    """Drops the first session at the final dot; the next one behaves."""
    with MisbehavingUpstream(script={"dot": Drop()}, faulty_sessions=1) as fake:
        yield fake


def test_message_dropped_at_the_final_dot_is_deferred_and_sent_again(provider, make_relay, capfd):
    """The first attempt ends in a deferral naming the lost connection after DATA; the retry
    delivers; the spool empties, and the provider got the message twice, never zero times."""
    relay = make_relay(**{"routes.provider": {"host": "127.0.0.1", "port": provider.port,
                                              "tls": "none", "max_connections": 1}})
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"],
                  message(subject="Invoice 81")) == {}

    provider.wait_for(lambda msgs: [m for m in msgs if m.reply], what="the retried message")
    wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")
    dropped, delivered = provider.messages
    assert (dropped.session, dropped.reply) == (0, None)
    assert (delivered.session, delivered.reply[:3]) == (1, "250")
    assert b"Subject: Invoice 81" in dropped.data and b"Subject: Invoice 81" in delivered.data

    events = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if '"logger":"relay.events"' in line]
    [deferred] = [e for e in events if e["event"] == "deferred"]
    assert deferred["reply"].startswith(f"451 4.4.1 127.0.0.1:{provider.port}: connection lost at DATA")
    assert "may have the message" in deferred["reply"]
    assert [e["event"] for e in events if e["event"] in ("delivered", "bounced")] == ["delivered"]

"""A password reset never waits behind a newsletter: with a bulk backlog held by
`limits.bulk.rate`, transactional mail of the same domain is delivered at once."""
from __future__ import annotations

import sqlite3

from tests.conftest import message, submit, wait_until

UNSUB = ("List-Unsubscribe: <https://acme.fr/u/1>\r\n"
         "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")


def held_bulk(relay) -> int:
    with sqlite3.connect(relay.config.spool.path / "relay.sqlite3") as conn:
        return conn.execute("SELECT COUNT(*) FROM messages WHERE stream = 1").fetchone()[0]


def test_transactional_mail_overtakes_a_paced_bulk_backlog(make_relay, upstream, capfd):
    relay = make_relay(**{"limits": {"bulk": {"recipients_threshold": 1, "rate": "2/h",
                                              "unsubscribe": "require"}}})
    port = relay.port("local")
    newsletter = message(subject="Big sale", extra=UNSUB)
    for i in range(6):
        assert submit(port, "news@acme.fr", [f"reader{i}@example.net"], newsletter) == {}
    # the first message is not yet past the threshold (1 recipient); the next five are bulk:
    # two go at once (2/h), three wait for the window to move
    wait_until(lambda: len(upstream.messages) == 3 and held_bulk(relay) == 3, timeout=15,
               what="two bulk messages sent and three held by bulk.rate")

    assert submit(port, "billing@acme.fr", ["user@example.net"],
                  message(subject="Reset your password")) == {}
    upstream.wait_for(lambda msgs: [m for m in msgs if m.rcpt_tos == ["user@example.net"]],
                      what="the password reset")
    assert held_bulk(relay) == 3                          # the backlog is still waiting
    events = capfd.readouterr().err
    assert '"by":"governor","reason":"bulk_pacing"' in events

"""The route's own 5xx refusal of an address is a hard bounce: the address is suppressed.

The fake provider answers RCPT TO permfail@example.net with `550 5.1.1 ... no such user`.
relay bounces that recipient (a DSN goes back to the sender) and, from then on, refuses RCPT
TO permfail@example.net from acme.fr at once with 550 5.1.1, without queueing anything for
the provider to refuse again; another sender domain (other.fr) is not affected. A temporary
refusal (tempfail@, 451 4.3.0) is retried and never suppresses the address.
"""
from __future__ import annotations

import smtplib

from tests.conftest import message, submit, wait_until


def rcpt_reply(port: int, mail_from: str, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail(mail_from)[0] == 250
        code, text = client.rcpt(rcpt)
    return code, text.decode()


def suppressed(relay) -> list[tuple[str, str, str]]:
    return [(r, d, reason.value) for r, d, reason, _ in relay.call(relay.relay.state.suppressions())]


def test_a_5xx_dead_address_is_suppressed_a_4xx_never(make_relay, upstream):
    relay = make_relay(**{"users": [{"username": "erp", "networks": ["127.0.0.1/32"],
                                     "senders": ["acme.fr", "other.fr"]}]})
    port = relay.port("local")

    assert submit(port, "billing@acme.fr", ["permfail@example.net", "tempfail@example.net"],
                  message(to="permfail@example.net, tempfail@example.net")) == {}
    wait_until(lambda: suppressed(relay), what="the 5.1.1 refusal to suppress permfail@")
    assert suppressed(relay) == [("permfail@example.net", "acme.fr", "hard_bounce")]
    dsn = upstream.wait_for(lambda msgs: [m for m in msgs if m.rcpt_tos == ["billing@acme.fr"]],
                            what="the DSN to the sender")[0]
    assert dsn.mail_from in ("", "<>") and b"5.1.1" in dsn.data

    attempts = upstream.rcpt_attempts["permfail@example.net"]
    code, text = rcpt_reply(port, "billing@acme.fr", "permfail@example.net")
    assert (code, text[:5]) == (550, "5.1.1"), text
    assert "bounced earlier" in text
    code, text = rcpt_reply(port, "billing@acme.fr", "PermFail@Example.net")
    assert (code, text[:5]) == (550, "5.1.1"), text
    assert upstream.rcpt_attempts["permfail@example.net"] == attempts == 1
    assert rcpt_reply(port, "billing@other.fr", "permfail@example.net")[0] == 250

    # tempfail@ keeps being retried (4xx), and is never suppressed
    wait_until(lambda: upstream.rcpt_attempts["tempfail@example.net"] >= 3, timeout=15,
               what="tempfail@ to be retried")
    assert all(r != "tempfail@example.net" for r, _, _ in suppressed(relay))
    assert rcpt_reply(port, "billing@acme.fr", "tempfail@example.net")[0] == 250
    [queued] = [s for s in relay.relay.spool.summaries() if s.pending]
    assert queued.pending == 1

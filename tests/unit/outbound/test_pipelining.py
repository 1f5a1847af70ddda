"""relay.outbound.pipelining: one transaction in two round trips (RFC 2920), over a real
socket to a scripted provider that holds its MAIL and RCPT replies until it reads DATA, so
only a client that pipelines gets past MAIL; the answers are those of the one-command-at-a-
time path (`upstream.py`)."""
from __future__ import annotations

import asyncio

import pytest

from relay.config import Route
from relay.outbound.upstream import RouteUnavailable, SmtpRoute
from tests.fakes.misbehaving_upstream import Delay, Drop, MisbehavingUpstream, Reply

BODY = b"Subject: hi\r\n\r\nhi\r\n.a line that starts with a dot\r\n..two\r\n"
RCPTS = ("a@example.net", "b@example.net", "c@example.net")


def _route(provider: MisbehavingUpstream, **timeouts: str) -> SmtpRoute:
    timeouts = {"command": "3s", **timeouts}
    config = Route(host="127.0.0.1", port=provider.port, tls="none", timeouts=timeouts)
    return SmtpRoute("provider", config, "relay.test")


def _send(route: SmtpRoute, recipients=RCPTS, messages: int = 1) -> list[list[str]]:
    async def run() -> list[list[str]]:
        session = route.session()
        try:
            return [[str(a) for a in await session.send("billing@acme.fr", list(recipients), BODY, [])]
                    for _ in range(messages)]
        finally:
            await session.close()
    return asyncio.run(run())


def test_envelope_and_data_leave_together_and_the_message_arrives_intact():
    """Two messages on one session: each MAIL, its RCPTs and DATA in one group (the provider
    answers MAIL only once it has read DATA), the body byte for byte, dot lines included."""
    with MisbehavingUpstream(pipelining=True) as provider:
        answers = _send(_route(provider, command="2s"), messages=2)
        commands = provider.commands(0)
        received = provider.accepted()
    assert answers == [["250 2.0.0 Ok: queued"] * 3] * 2
    assert [c.split(" ")[0] for c in commands] == (
        ["EHLO"] + ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"] * 2 + ["QUIT"])
    assert [m.data for m in received] == [BODY] * 2
    assert received[0].rcpt_tos == list(RCPTS)


def test_a_refused_mail_answers_every_recipient_and_resets_the_session():
    with MisbehavingUpstream(pipelining=True, script={"mail": Reply("550 5.7.1 sender refused")}) as provider:
        answers = _send(_route(provider))
        commands = provider.commands(0)
    assert answers == [["550 5.7.1 sender refused"] * 3]
    assert [c.split(" ")[0] for c in commands] == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA",
                                                   "RSET", "QUIT"]
    assert not provider.accepted()


def test_421_at_rcpt_answers_the_recipients_not_refused_and_ends_the_session():
    with MisbehavingUpstream(pipelining=True, script={"rcpt": Reply("421 4.7.0 closing")}) as provider:
        answers = _send(_route(provider))
        commands = provider.commands(0)
    assert answers == [["421 4.7.0 closing"] * 3]
    assert "RSET" not in [c.split(" ")[0] for c in commands]      # closed, not reset
    assert not provider.accepted()


def test_every_recipient_refused_and_data_taken_anyway_sends_an_empty_message():
    """A server that answers 354 although it refused every RCPT (RFC 2920 §3.1 says it must
    refuse DATA) gets a lone dot: nothing of the message, and nobody counts as sent."""
    script = {"rcpt": Reply("550 5.1.1 no such user"), "data": Reply("354 go ahead")}
    with MisbehavingUpstream(pipelining=True, script=script) as provider:
        answers = _send(_route(provider))
        commands = provider.commands(0)
        messages = list(provider.messages)
    assert answers == [["550 5.1.1 no such user"] * 3]
    assert [m.data for m in messages] == [b""]
    assert [c.split(" ")[0] for c in commands][-2:] == ["RSET", "QUIT"]


def test_a_refused_data_answers_the_accepted_recipients():
    with MisbehavingUpstream(pipelining=True, script={"data": Reply("452 4.3.1 out of space")}) as provider:
        answers = _send(_route(provider))
        commands = provider.commands(0)
    assert answers == [["452 4.3.1 out of space"] * 3]
    assert "RSET" in commands


def test_the_refused_message_answers_its_recipients():
    with MisbehavingUpstream(pipelining=True, script={"dot": Reply("554 5.7.1 spam")}) as provider:
        answers = _send(_route(provider))
    assert answers == [["554 5.7.1 spam"] * 3]


def test_multi_line_replies_are_read_whole():
    script = {"rcpt": Reply("250-2.1.5 recipient ok\r\n250-more text\r\n250 2.1.5 done")}
    with MisbehavingUpstream(pipelining=True, script=script) as provider:
        answers = _send(_route(provider))
    assert answers == [["250 2.0.0 Ok: queued"] * 3]


def test_a_connection_lost_after_the_message_names_data_and_the_risk():
    with MisbehavingUpstream(pipelining=True, script={"dot": Drop()}) as provider:
        with pytest.raises(RouteUnavailable) as info:
            _send(_route(provider))
    assert str(info.value) == (f"127.0.0.1:{provider.port}: connection lost at DATA (the provider "
                               "may have the message: it is sent again)")


def test_a_late_rcpt_reply_gets_the_command_timeout():
    with MisbehavingUpstream(pipelining=True, script={"rcpt": Delay(5)}) as provider:
        with pytest.raises(RouteUnavailable) as info:
            _send(_route(provider, command="0.3s"))
    assert str(info.value) == f"127.0.0.1:{provider.port}: no reply within 0.3s at MAIL"


def test_a_route_without_pipelining_gets_one_command_at_a_time():
    with MisbehavingUpstream(pipelining=False) as provider:
        answers = _send(_route(provider))
        commands = provider.commands(0)
    assert answers == [["250 2.0.0 Ok: queued"] * 3]
    assert [c.split(" ")[0] for c in commands] == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]

"""relay.outbound.upstream: the SMTP route client against a scripted fake provider.

Each phase waits as long as its own `timeouts` key says; a failure names its phase; and the
route's TLS context follows relay's TLS policy (relay.tls).
"""
from __future__ import annotations

import asyncio
import ssl

import pytest

from relay import tls
from relay.config import Route
from relay.outbound.upstream import RouteUnavailable, SmtpRoute
from tests.fakes.misbehaving_upstream import Delay, MisbehavingUpstream, Reply


def _route(provider: MisbehavingUpstream, **timeouts: str) -> SmtpRoute:
    config = Route(host="127.0.0.1", port=provider.port, tls="none", timeouts=timeouts)
    return SmtpRoute("provider", config, "relay.test")


async def _send_once(route: SmtpRoute, recipients: tuple[str, ...] = ("a@example.net",)) -> list[str]:
    session = route.session()
    try:
        answers = await session.send("billing@acme.fr", list(recipients), b"Subject: hi\r\n\r\nhi\r\n", [])
        return [str(a) for a in answers]
    finally:
        await session.close()


def test_command_timeout_bounds_a_slow_rcpt_reply():
    """A RCPT reply later than `timeouts.command` ends the attempt, naming the wait and phase."""
    with MisbehavingUpstream(script={"rcpt": Delay(5)}) as provider:
        with pytest.raises(RouteUnavailable) as info:
            asyncio.run(_send_once(_route(provider, command="0.2s")))
    assert str(info.value) == f"127.0.0.1:{provider.port}: no reply within 0.2s at RCPT"


def test_the_final_dot_gets_the_data_timeout_not_the_command_timeout():
    """A dot answered after 0.5s is delivered when `data` allows it, though `command` would not."""
    with MisbehavingUpstream(script={"dot": Delay(0.5)}) as provider:
        answers = asyncio.run(_send_once(_route(provider, command="0.2s", data="5s")))
    assert answers == ["250 2.0.0 Ok: queued"]


def test_a_slow_greeting_gets_the_connect_timeout():
    with MisbehavingUpstream(script={"greeting": Delay(5)}) as provider:
        with pytest.raises(RouteUnavailable) as info:
            asyncio.run(_send_once(_route(provider, connect="0.2s")))
    assert str(info.value).endswith("no reply within 0.2s connecting")


def test_421_at_rcpt_answers_the_recipients_not_asked_yet_and_ends_the_session():
    """The recipient refused with 421 and those not asked yet get that 421 (deferred); the
    session is closed, not reset for another transaction."""
    script = {"rcpt": Reply("421 4.7.0 closing")}
    with MisbehavingUpstream(script=script) as provider:
        answers = asyncio.run(_send_once(_route(provider), ("a@example.net", "b@example.net")))
        commands = provider.commands(0)
    assert answers == ["421 4.7.0 closing"] * 2
    assert [c.split(" ")[0] for c in commands] == ["EHLO", "MAIL", "RCPT"]


def test_route_tls_context_follows_relays_tls_policy():
    """TLS 1.2 at least, and no TLS 1.2 suite without forward secrecy or an AEAD cipher."""
    route = SmtpRoute("provider", Route(host="smtp.example.net", tls="starttls"), "relay.test")
    context = route.tls_context
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    suites = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert suites
    for suite in suites:
        assert suite["aead"], suite["name"]
        assert suite["kea"] in ("kx-ecdhe", "kx-dhe"), suite["name"]
    assert {c["name"] for c in context.get_ciphers()} == {
        c["name"] for c in tls.apply_policy(ssl.create_default_context()).get_ciphers()}

"""A route whose TLS fails (the provider sends garbage after STARTTLS, or presents a
certificate the route does not trust) defers the message with a reply naming TLS: nothing
is sent over a channel that is not verified TLS, nothing is bounced, and once TLS works the
message goes.
"""
import json
import ssl

import trustme

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import Garbage, MisbehavingUpstream


def _provider_context(issuer: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issuer.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


def _route(provider: MisbehavingUpstream, ca: trustme.CA, tmp_path) -> dict:
    ca_file = tmp_path / "provider-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {"host": "127.0.0.1", "port": provider.port, "tls": "starttls",
            "ca_file": str(ca_file), "max_connections": 1}


def _events(capfd) -> list[dict]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines()
            if '"logger":"relay.events"' in line]


def test_garbage_after_starttls_defers_and_the_retry_delivers(make_relay, ca, tmp_path, capfd):
    """The first session's STARTTLS is answered 220 and then bytes that are not TLS."""
    with MisbehavingUpstream(script={"starttls": Garbage()}, faulty_sessions=1,
                             tls_context=_provider_context(ca)) as provider:
        relay = make_relay(**{"routes.provider": _route(provider, ca, tmp_path)})
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
        provider.wait_for(lambda msgs: msgs, what="the message over TLS on the retry")
        wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")
        relay.stop()

    [received] = provider.messages
    assert received.session == 1 and received.reply.startswith("250")
    assert "STARTTLS" in provider.commands(0) and "STARTTLS" in provider.commands(1)
    events = _events(capfd)
    [deferred] = [e for e in events if e["event"] == "deferred"]
    assert deferred["reply"].startswith(f"451 4.4.1 127.0.0.1:{provider.port}: TLS failed at STARTTLS: ")
    assert [e["event"] for e in events if e["event"] in ("delivered", "bounced")] == ["delivered"]


def test_untrusted_certificate_defers_and_the_message_stays_queued(make_relay, ca, tmp_path, capfd):
    """The provider's certificate comes from a CA the route does not trust: every attempt
    is deferred (no DSN, no bounce), and the fake never sees a MAIL command."""
    with MisbehavingUpstream(tls_context=_provider_context(trustme.CA())) as provider:
        relay = make_relay(**{"routes.provider": _route(provider, ca, tmp_path)})
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
        [summary] = wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts >= 2],
                               what="two delivery attempts")
        relay.stop()

    assert summary.pending == 1
    assert not any(c.upper().startswith("MAIL") for s in provider.sessions for c in s)
    assert provider.messages == []
    events = _events(capfd)
    deferred = [e for e in events if e["event"] == "deferred"]
    assert len(deferred) >= 2
    assert all("TLS failed at STARTTLS: " in e["reply"] and "CERTIFICATE_VERIFY_FAILED" in e["reply"]
               for e in deferred), deferred
    assert not [e for e in events if e["event"] in ("bounced", "dsn_sent", "expired")]

"""A route whose provider refuses relay's credentials (535) defers the message, even though
535 is a permanent reply: relay's own credentials are the operator's to fix, never a reason
to bounce a customer's mail. The message stays queued, retried with backoff (until
`spool.max_age`), and goes as soon as the provider accepts the login again.
"""
import json

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import MisbehavingUpstream, Reply

USERNAME, KEY = "me@acme.fr", "provider-smtp-key"
PASSWORD_ENV = "RELAY_TEST_PROVIDER_KEY"
REFUSED = "535 5.7.8 Authentication credentials invalid"


@pytest.fixture
def provider():
    """Refuses the login of the first two sessions, then accepts it (the key was fixed)."""
    with MisbehavingUpstream(script={"auth": Reply(REFUSED)}, faulty_sessions=2,
                             credentials=(USERNAME, KEY)) as fake:
        yield fake


def test_refused_auth_defers_until_the_login_works(provider, make_relay, monkeypatch, capfd):
    """Two attempts end in AUTH refused (deferred, no DSN, a warning); the third delivers."""
    monkeypatch.setenv(PASSWORD_ENV, KEY)
    relay = make_relay(**{"routes.provider": {
        "host": "127.0.0.1", "port": provider.port, "tls": "none", "max_connections": 1,
        "username": USERNAME, "password_env": PASSWORD_ENV}})
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}

    [received] = provider.wait_for(lambda msgs: msgs, what="the message once AUTH works")
    wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")
    assert received.session == 2 and received.reply.startswith("250")
    assert all(not any(c.upper().startswith("MAIL") for c in provider.commands(s)) for s in (0, 1))

    log = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    events = [e for e in log if e["logger"] == "relay.events"]
    deferred = [e for e in events if e["event"] == "deferred"]
    assert [e["reply"] for e in deferred] == [
        f"451 4.4.1 127.0.0.1:{provider.port}: AUTH refused: {REFUSED} "
        "(check the route's username and password_env)"] * 2
    assert [e["event"] for e in events if e["event"] in ("delivered", "bounced", "dsn_sent")] == ["delivered"]
    warnings = [e["msg"] for e in log if e["logger"] == "relay.upstream"]
    assert len(warnings) == 2
    assert all(w.startswith("route provider unavailable: ") and "AUTH refused: 535" in w
               for w in warnings), warnings

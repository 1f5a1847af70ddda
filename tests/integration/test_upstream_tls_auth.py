"""The route reaches the provider over TLS (STARTTLS or implicit), verifies its certificate
against the configured CA, and authenticates with the username and the password from
`password_env`. When the provider refuses the password or cannot be trusted, the message
stays queued for a later attempt: our side's trouble is never a bounce.
"""
import ssl

import pytest
from aiosmtpd.smtp import AuthResult

from tests.conftest import message, submit, wait_until
from tests.fakes.upstream import FakeUpstream

USERNAME, KEY = "me@acme.fr", "provider-smtp-key"
PASSWORD_ENV = "RELAY_TEST_PROVIDER_KEY"

# aiosmtpd warns about any server requiring AUTH without STARTTLS: the implicit-TLS fake is
# encrypted from the first byte, so the warning does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


class AnsweringProvider(FakeUpstream):
    """The fake provider, answering a refused AUTH with 535 (the shared fake's authenticator
    returns AuthResult(handled=True) on failure, so aiosmtpd sends no reply at all and the
    client waits for its timeout)."""

    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        result = super()._authenticator(server, session, envelope, mechanism, auth_data)
        return result if result.success else AuthResult(success=False, handled=False)


@pytest.fixture(scope="module")
def provider_tls(ca) -> ssl.SSLContext:
    """The provider's server side: a certificate for 127.0.0.1 issued by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "provider-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def start_provider(provider_tls):
    """start_provider(tls) -> a fake provider speaking TLS that requires AUTH."""
    started: list[FakeUpstream] = []

    def start(tls: str) -> FakeUpstream:
        fake = AnsweringProvider(tls=tls, tls_context=provider_tls, credentials=(USERNAME, KEY)).start()
        started.append(fake)
        return fake
    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def relay_with_provider(start_provider, make_relay):
    """(start_provider, make_relay), set up in that order so that relays stop (and say QUIT
    to the provider) before the provider stops."""
    return start_provider, make_relay


def _route(provider: FakeUpstream, tls: str, **extra) -> dict:
    route = {"host": "127.0.0.1", "port": provider.port, "tls": tls, "username": USERNAME,
             "password_env": PASSWORD_ENV, "max_connections": 1, "timeout": "10s"}
    route.update(extra)
    return route


def _queued_after_failed_attempts(relay, provider: FakeUpstream, attempts: int = 2):
    """Wait until the one message has been tried `attempts` times; return its spool entry."""
    [summary] = wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts >= attempts],
                           what=f"{attempts} delivery attempts")
    assert summary.pending == 1
    assert len(relay.relay.spool.summaries()) == 1, "no DSN: nothing was bounced"
    assert provider.messages == []
    return relay.relay.spool.get(summary.id)


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_route_authenticates_over_verified_tls(relay_with_provider, ca_file, monkeypatch, tls):
    """With `tls`, `ca_file`, `username` and `password_env`, the route delivers over TLS it
    has verified and logs in as the configured user."""
    start_provider, make_relay = relay_with_provider
    monkeypatch.setenv(PASSWORD_ENV, KEY)
    provider = start_provider(tls)
    relay = make_relay(**{"routes.provider": _route(provider, tls, ca_file=ca_file)})
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
    [received] = provider.wait_for(lambda msgs: msgs, what="the message at the TLS provider")
    assert received.auth_user == USERNAME
    assert received.rcpt_tos == ["client@example.net"]
    assert received.data.count(b"DKIM-Signature:") == 2
    wait_until(lambda: relay.relay.spool.summaries() == [], what="the delivery to be recorded")


def test_wrong_provider_password_leaves_the_message_queued(relay_with_provider, ca_file, monkeypatch):
    """A provider refusing the route's password is retried, not bounced: the recipient
    stays queued with a 4xx reply, and no DSN goes to the sender."""
    start_provider, make_relay = relay_with_provider
    monkeypatch.setenv(PASSWORD_ENV, "not-the-key")
    provider = start_provider("starttls")
    relay = make_relay(**{"routes.provider": _route(provider, "starttls", ca_file=ca_file)})
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
    queued = _queued_after_failed_attempts(relay, provider)
    [recipient] = queued.recipients
    assert recipient.state == "queued"
    assert recipient.reply.startswith("4"), recipient.reply


def test_untrusted_provider_certificate_leaves_the_message_queued(relay_with_provider, monkeypatch):
    """Without `ca_file` the test CA is not trusted: the route refuses to talk to the
    provider (no credentials sent over unverified TLS) and the message stays queued."""
    start_provider, make_relay = relay_with_provider
    monkeypatch.setenv(PASSWORD_ENV, KEY)
    provider = start_provider("implicit")
    relay = make_relay(**{"routes.provider": _route(provider, "implicit")})
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
    queued = _queued_after_failed_attempts(relay, provider)
    assert queued.recipients[0].reply.startswith("4"), queued.recipients[0].reply

"""An application submits over implicit TLS (port 465, listener "submissions") with AUTH
PLAIN or AUTH LOGIN; the provider receives the message, traced as ESMTPSA (RFC 3848)."""
import smtplib

import pytest

from tests.conftest import PASSWORD, message
from tests.conftest import _HASH as HASH

# Only billing-app, with a password: the test client is not trusted by network here, so
# every accepted message below was accepted because AUTH succeeded.
PASSWORD_USERS = [{"username": "billing-app", "password_hash": HASH, "senders": ["acme.fr"]}]


def _authenticate(client: smtplib.SMTP, mechanism: str, initial_response: bool) -> tuple[int, bytes]:
    """One AUTH exchange with the named mechanism (smtplib's login() would try several)."""
    client.user, client.password = "billing-app", PASSWORD
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    return client.auth(mechanism, method, initial_response_ok=initial_response)


@pytest.mark.parametrize("initial_response", [True, False], ids=["initial-response", "challenge"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_over_implicit_tls_delivers_to_the_provider(make_relay, upstream, client_tls,
                                                         mechanism, initial_response):
    """AUTH PLAIN and AUTH LOGIN, with or without an initial response, authenticate over
    implicit TLS; the message reaches the provider with a Received field saying ESMTPSA."""
    relay = make_relay(users=PASSWORD_USERS)
    to = f"{mechanism.lower()}-{initial_response}@example.net"
    with smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=client_tls, timeout=10) as client:
        client.ehlo("app.test")
        assert {"PLAIN", "LOGIN"} <= set(client.esmtp_features["auth"].split())
        assert not client.has_extn("starttls")          # already encrypted
        code, text = _authenticate(client, mechanism, initial_response)
        assert (code, text[:5]) == (235, b"2.7.0")
        assert client.sendmail("billing@acme.fr", [to], message(to=to)) == {}
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message at the provider")
    assert (received.mail_from, received.rcpt_tos) == ("billing@acme.fr", [to])
    assert b"with ESMTPSA id" in received.data
    assert received.data.count(b"DKIM-Signature:") == 2


def test_implicit_tls_without_auth_cannot_relay(make_relay, client_tls):
    """TLS alone is not authentication: without AUTH, MAIL FROM is refused (530 5.7.0)."""
    relay = make_relay(users=PASSWORD_USERS)
    with smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=client_tls, timeout=10) as client:
        client.ehlo("app.test")
        code, text = client.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert (code, text[:5]) == (530, b"5.7.0")


def test_wrong_password_over_implicit_tls_is_refused(make_relay, client_tls):
    """A wrong password gets 535 5.7.8 over implicit TLS too, and nothing is authenticated."""
    relay = make_relay(users=PASSWORD_USERS)
    with smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=client_tls, timeout=10) as client:
        client.ehlo("app.test")
        client.user, client.password = "billing-app", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("PLAIN", client.auth_plain)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (535, b"5.7.8")
        code, _ = client.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert code == 530

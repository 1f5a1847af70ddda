"""An application submits over STARTTLS with AUTH; the provider receives it DKIM-signed."""
import smtplib

import dkim
import pytest

from tests.conftest import PASSWORD, message, submit
from tests.conftest import _HASH as HASH


def test_authenticated_submission_reaches_the_provider_signed(make_relay, upstream, client_tls, dkim_dns):
    relay = make_relay()
    refused = submit(relay.port("submission"), "billing@acme.fr", ["client@example.net"],
                     message(), tls="starttls", context=client_tls, login=("billing-app", PASSWORD))
    assert refused == {}
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message at the provider")
    assert received.mail_from == "billing@acme.fr"
    assert received.rcpt_tos == ["client@example.net"]
    assert received.data.count(b"DKIM-Signature:") == 2
    assert all(dkim.DKIM(received.data).verify(idx=i, dnsfunc=dkim_dns) for i in range(2))
    assert b"with ESMTPSA id" in received.data


def test_auth_is_not_offered_before_tls(make_relay, client_tls):
    relay = make_relay()
    with smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10) as client:
        client.ehlo("app.test")
        assert not client.has_extn("auth")
        assert client.has_extn("starttls")
        code, text = client.docmd("AUTH", "PLAIN AGJpbGxpbmctYXBwAHg=")
        assert code == 530 and b"STARTTLS" in text
        code, _ = client.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert code == 530
        client.starttls(context=client_tls)
        client.ehlo("app.test")
        assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features["auth"]


def test_unauthenticated_client_cannot_relay(make_relay, client_tls):
    """Without AUTH and outside every user's `networks`, MAIL FROM is refused."""
    relay = make_relay(users=[{"username": "billing-app", "password_hash": HASH, "senders": ["acme.fr"]}])
    with smtplib.SMTP("127.0.0.1", relay.port("submission"), timeout=10) as client:
        client.starttls(context=client_tls)
        client.ehlo("app.test")
        code, text = client.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert (code, text[:5]) == (530, b"5.7.0")


def test_wrong_password_is_refused(make_relay, client_tls):
    relay = make_relay()
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        submit(relay.port("submission"), "billing@acme.fr", ["client@example.net"], message(),
               tls="starttls", context=client_tls, login=("billing-app", "wrong"))
    assert refused.value.smtp_code == 535
    assert refused.value.smtp_error.startswith(b"5.7.8")

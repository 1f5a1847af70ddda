"""A submission port (587 STARTTLS, 465 implicit TLS) requires AUTH, even from a user's
`networks`, as Postfix's submission service does: 530 5.7.0 at MAIL FROM until the client
authenticates. `networks` works on listeners whose `auth` is optional: the default where
`tls: none` (an application on the relay's own host), or where the operator says so."""
from __future__ import annotations

import smtplib

from tests.conftest import PASSWORD, message


def mail_from(port: int, *, tls: str, context=None, login=None) -> tuple[int, str]:
    """EHLO (and STARTTLS, AUTH when asked), then MAIL FROM as the `erp` networks user would."""
    if tls == "implicit":
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    with client:
        client.ehlo("erp.test")
        if tls == "starttls":
            client.starttls(context=context)
            client.ehlo("erp.test")
        if login:
            client.login(*login)
        code, text = client.mail("billing@acme.fr")
        if code == 250:
            client.rcpt("client@example.net")
            client.data(message())
    return code, text.decode()


def test_starttls_and_implicit_listeners_refuse_a_networks_client_without_auth(make_relay, client_tls):
    """The default listeners: 587-style and 465-style answer 530 5.7.0 to a client inside
    the `erp` user's 127.0.0.1/32 that did not AUTH; the tls: none listener takes it."""
    relay = make_relay()
    for name, tls in (("submission", "starttls"), ("submissions", "implicit")):
        code, text = mail_from(relay.port(name), tls=tls, context=client_tls)
        assert (code, text[:5]) == (530, "5.7.0"), (name, text)
    assert mail_from(relay.port("local"), tls="none")[0] == 250


def test_auth_still_works_on_a_required_listener(make_relay, client_tls, upstream):
    """The same client with credentials is accepted on the STARTTLS listener."""
    relay = make_relay()
    code, text = mail_from(relay.port("submission"), tls="starttls", context=client_tls,
                           login=("billing-app", PASSWORD))
    assert code == 250, text
    upstream.wait_for(lambda msgs: len(msgs) == 1, what="the authenticated message")


def test_auth_optional_lets_networks_clients_in_on_a_tls_listener(make_relay, client_tls, upstream):
    """`auth: optional` on a STARTTLS listener: the networks user sends without AUTH."""
    relay = make_relay(**{"server.listeners": [
        {"name": "submission", "address": "127.0.0.1", "port": 0, "tls": "starttls",
         "auth": "optional"}]})
    code, text = mail_from(relay.port("submission"), tls="starttls", context=client_tls)
    assert code == 250, text
    upstream.wait_for(lambda msgs: len(msgs) == 1, what="the networks client's message")


def test_auth_required_on_a_plain_listener_refuses_networks_clients(make_relay):
    """`auth: required` on a tls: none listener: no principal from `networks`, and no AUTH
    without TLS either, so nothing is accepted there (530 5.7.0)."""
    relay = make_relay(**{"server.listeners": [
        {"name": "local", "address": "127.0.0.1", "port": 0, "tls": "none", "auth": "required"}]})
    code, text = mail_from(relay.port("local"), tls="none")
    assert (code, text[:5]) == (530, "5.7.0"), text

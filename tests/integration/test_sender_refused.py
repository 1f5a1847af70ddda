"""A client may only send as the senders its user lists, from domains the relay knows:
anything else is refused with 550 5.7.1, and nothing refused reaches the provider.

billing-app may send as acme.fr and as the single address news@other.fr; the network user
erp (the test client's 127.0.0.1) as acme.fr only.
"""
import smtplib

import pytest

from tests.conftest import PASSWORD, message, submit, wait_until


def _deliver_marker(relay, upstream) -> None:
    """Send one allowed message and wait for it: once it has arrived, anything refused
    before it would have arrived too, had it been accepted."""
    submit(relay.port("local"), "billing@acme.fr", ["marker@example.net"], message(to="marker@example.net"))
    upstream.wait_for(lambda msgs: any("marker@example.net" in m.rcpt_tos for m in msgs),
                      what="the marker message")


def _only_marker_delivered(upstream) -> bool:
    with upstream.lock:
        return [m.rcpt_tos for m in upstream.messages] == [["marker@example.net"]]


def test_envelope_sender_not_allowed_is_refused_naming_the_address(make_relay, upstream):
    """MAIL FROM an address the user may not use gets 550 5.7.1 naming that address."""
    relay = make_relay()
    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        code, text = client.docmd("MAIL", "FROM:<ceo@other.fr>")
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"<ceo@other.fr>" in text
        code, _ = client.docmd("RCPT", "TO:<client@example.net>")
        assert code == 503                                 # no transaction was opened
    _deliver_marker(relay, upstream)
    assert _only_marker_delivered(upstream)


def test_header_from_not_allowed_is_refused(make_relay, upstream):
    """An allowed envelope sender does not let the header From name someone else (550 5.7.1)."""
    relay = make_relay()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay.port("local"), "billing@acme.fr", ["client@example.net"],
               message(from_addr="The CEO <ceo@other.fr>"))
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
    assert b"ceo@other.fr" in refused.value.smtp_error
    _deliver_marker(relay, upstream)
    assert _only_marker_delivered(upstream)


def test_single_address_sender_is_allowed_but_not_its_whole_domain(make_relay, upstream, client_tls):
    """A sender entry "news@other.fr" allows exactly that address: news@ is delivered,
    sales@other.fr is refused with 550 5.7.1, as envelope sender and as header From."""
    relay = make_relay()
    port, login = relay.port("submission"), ("billing-app", PASSWORD)
    assert submit(port, "news@other.fr", ["reader@example.net"],
                  message(from_addr="Other News <news@other.fr>", to="reader@example.net"),
                  tls="starttls", context=client_tls, login=login) == {}
    with pytest.raises(smtplib.SMTPSenderRefused) as envelope_refused:
        submit(port, "sales@other.fr", ["lead@example.net"], message(from_addr="sales@other.fr"),
               tls="starttls", context=client_tls, login=login)
    assert (envelope_refused.value.smtp_code, envelope_refused.value.smtp_error[:5]) == (550, b"5.7.1")
    assert b"<sales@other.fr>" in envelope_refused.value.smtp_error
    with pytest.raises(smtplib.SMTPDataError) as header_refused:
        submit(port, "news@other.fr", ["lead@example.net"], message(from_addr="sales@other.fr"),
               tls="starttls", context=client_tls, login=login)
    assert (header_refused.value.smtp_code, header_refused.value.smtp_error[:5]) == (550, b"5.7.1")

    [news] = upstream.wait_for(lambda msgs: [m for m in msgs if m.rcpt_tos == ["reader@example.net"]],
                               what="the newsletter")
    assert news.mail_from == "news@other.fr"
    _deliver_marker(relay, upstream)
    assert not upstream.delivered_to("lead@example.net")


def test_sender_domain_not_configured_is_refused(make_relay, upstream):
    """A user allowed to send as a domain that has no `domains:` entry (so no route and no
    DKIM key) is refused with 550 5.7.1 naming the domain, in MAIL FROM and in header From."""
    relay = make_relay(users=[{"username": "erp", "networks": ["127.0.0.1/32"],
                               "senders": ["acme.fr", "unknown.fr"]}])
    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        code, text = client.docmd("MAIL", "FROM:<billing@unknown.fr>")
        assert (code, text[:5]) == (550, b"5.7.1")
        assert b"unknown.fr" in text
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay.port("local"), "billing@acme.fr", ["client@example.net"],
               message(from_addr="billing@unknown.fr"))
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
    assert b"unknown.fr" in refused.value.smtp_error
    _deliver_marker(relay, upstream)
    assert _only_marker_delivered(upstream)
    wait_until(lambda: relay.relay.spool.summaries() == [], what="an empty spool")

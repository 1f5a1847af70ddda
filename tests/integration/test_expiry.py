"""A recipient still failing temporarily after `spool.max_age` expires, with a DSN.

Expiry turns the last temporary failure into a final one: the recipient is given up,
the envelope sender gets a DSN saying so (RFC 3464 `Action: failed` with the 4.x.x status
of the last reply, RFC 3463), and the message leaves the spool.
"""
import email

from tests.conftest import message, submit, wait_until

NULL_SENDER = "<>"       # how aiosmtpd records the reverse-path of `MAIL FROM:<>`


def test_recipient_deferred_past_max_age_expires_with_a_dsn(make_relay, upstream, capfd):
    """tempfail@ is deferred on every attempt; after max_age (1 s) it expires and a DSN is sent."""
    relay = make_relay(**{"spool.max_age": "1s"})
    assert submit(relay.port("local"), "billing@acme.fr", ["tempfail@example.net"],
                  message(subject="Reminder 9")) == {}

    [notice] = upstream.wait_for(lambda msgs: [m for m in msgs if m.mail_from == NULL_SENDER],
                                 what="the expiry DSN")
    assert notice.rcpt_tos == ["billing@acme.fr"]
    assert upstream.rcpt_attempts["tempfail@example.net"] >= 2   # it was retried before expiring
    dsn = email.message_from_bytes(notice.data)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    _, status, headers = dsn.get_payload()
    [failed] = status.get_payload()[1:]
    assert failed["Final-Recipient"] == "rfc822; tempfail@example.net"
    assert failed["Action"] == "failed"
    assert failed["Status"].startswith("4.")
    assert failed["Diagnostic-Code"].startswith("smtp; 451")
    assert "Subject: Reminder 9" in headers.get_payload()

    wait_until(lambda: not relay.relay.spool.summaries(), what="the expired message to leave the spool")
    assert upstream.delivered_to("tempfail@example.net") == []
    events = [line for line in capfd.readouterr().err.splitlines() if "relay.events" in line]
    assert sum('"event":"expired"' in e for e in events) == 1

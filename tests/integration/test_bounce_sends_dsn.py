"""A permanent failure (5xx) at the provider bounces the recipient and sends a DSN.

The DSN (RFC 3464) goes to the envelope sender from the null sender `<>` (RFC 5321 §4.5.5),
as `multipart/report; report-type=delivery-status` with one block per failed recipient,
DKIM-signed by the sender's domain like any other message it sends. A message whose
recipients have all failed leaves the spool, and a DSN that bounces makes no DSN of its own.
"""
import email
import email.message

import dkim

from tests.conftest import message, submit, wait_until


# aiosmtpd records the null reverse-path of `MAIL FROM:<>` as "<>".
NULL_SENDER = "<>"


def _dsns(msgs):
    return [m for m in msgs if m.mail_from == NULL_SENDER]


def _report(data: bytes) -> tuple[email.message.Message, list[email.message.Message]]:
    """The DSN as parsed by the standard library: the whole message and its status blocks."""
    dsn = email.message_from_bytes(data)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = dsn.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    return dsn, parts[1].get_payload()      # [per-message block, per-recipient blocks...]


def test_bounced_recipient_gets_a_delivery_status_notification(make_relay, upstream, dkim_dns):
    """permfail@ is bounced with 550 5.1.1: a DSN reaches the envelope sender; ok@ is delivered."""
    relay = make_relay()
    assert submit(relay.port("local"), "billing@acme.fr", ["permfail@example.net", "ok@example.net"],
                  message(subject="Invoice 77")) == {}

    [notice] = upstream.wait_for(_dsns, what="the DSN at the provider")
    assert notice.rcpt_tos == ["billing@acme.fr"]
    dsn, blocks = _report(notice.data)
    assert dsn["To"] == "<billing@acme.fr>"
    assert dsn["From"].endswith("<mailer-daemon@acme.fr>")
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, *per_recipient = blocks
    assert per_message["Reporting-MTA"] == "dns; relay.test"
    [failed] = per_recipient                                   # only the bounced recipient
    assert failed["Final-Recipient"] == "rfc822; permfail@example.net"
    assert failed["Action"] == "failed"
    assert failed["Status"] == "5.1.1"
    assert failed["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    original = dsn.get_payload()[2].get_payload()
    assert "Subject: Invoice 77" in original
    assert all(dkim.DKIM(notice.data).verify(idx=i, dnsfunc=dkim_dns) for i in range(2))

    assert [m.rcpt_tos for m in upstream.delivered_to("ok@example.net")] == [["ok@example.net"]]
    wait_until(lambda: not relay.relay.spool.summaries(), what="an empty spool")
    assert upstream.rcpt_attempts["permfail@example.net"] == 1   # a bounce is never retried


def test_message_whose_every_recipient_bounces_leaves_the_queue(make_relay, upstream):
    """Two bounced recipients: one DSN naming both, and nothing of the message stays queued."""
    relay = make_relay()
    assert submit(relay.port("local"), "billing@acme.fr",
                  ["permfail@example.net", "permfail+2@example.net"], message()) == {}

    [notice] = upstream.wait_for(_dsns, what="the DSN at the provider")
    _, (_, *per_recipient) = _report(notice.data)
    assert sorted(b["Final-Recipient"] for b in per_recipient) == [
        "rfc822; permfail+2@example.net", "rfc822; permfail@example.net"]
    assert all(b["Action"] == "failed" and b["Status"] == "5.1.1" for b in per_recipient)
    wait_until(lambda: not relay.relay.spool.summaries(), what="an empty spool")
    assert [m for m in upstream.messages if m.mail_from != NULL_SENDER] == []


def test_a_bounced_dsn_makes_no_new_dsn(make_relay, upstream, capfd):
    """The envelope sender permfail@acme.fr bounces too: its DSN is bounced and that is the end."""
    relay = make_relay()
    assert submit(relay.port("local"), "permfail@acme.fr", ["permfail@example.net"],
                  message(from_addr="permfail@acme.fr")) == {}

    # The DSN is enqueued in the same transaction that records the bounce, so once the spool
    # is empty every DSN there will ever be has been attempted.
    wait_until(lambda: upstream.rcpt_attempts["permfail@acme.fr"] >= 1, what="the DSN's attempt")
    wait_until(lambda: not relay.relay.spool.summaries(), what="an empty spool")
    assert upstream.rcpt_attempts["permfail@acme.fr"] == 1     # the one DSN, refused once
    assert upstream.messages == []
    events = [line for line in capfd.readouterr().err.splitlines() if "relay.events" in line]
    assert sum('"event":"dsn_sent"' in e for e in events) == 1
    assert sum('"event":"bounced"' in e for e in events) == 2  # the message, then its DSN

"""relay.outbound.dsn: RFC 3464 delivery status notifications readable by any parser."""
from __future__ import annotations

import email
import email.policy
import email.utils

import pytest

from relay.checks.content import split
from relay.model import QueuedMessage, Recipient, RecipientState
from relay.outbound.dsn import build, status_of

NOW = 1_700_000_000.0
ORIGINAL_HEADERS = (b"From: Alice <alice@acme.fr>\r\nTo: bob@example.com, carol@example.com\r\n"
                    b"Subject: Quarterly report\r\nMessage-ID: <q1@acme.fr>\r\n")
ORIGINAL = QueuedMessage(
    id="01HQZABC", mail_from="alice@acme.fr",
    recipients=[], domain="acme.fr", route="brevo",
    body=ORIGINAL_HEADERS + b"\r\nThe secret numbers.\r\n", created=NOW - 3600)


def bounced(address: str, reply: str) -> Recipient:
    return Recipient(address, RecipientState.BOUNCED, reply)


def expired(address: str, reply: str) -> Recipient:
    return Recipient(address, RecipientState.EXPIRED, reply)


def parse_dsn(failed: list[Recipient], original: QueuedMessage = ORIGINAL) -> email.message.Message:
    data = build(original, failed, "relay.acme.fr", "smtp-relay.brevo.com:587", NOW)
    assert b"\n" not in data.replace(b"\r\n", b"")            # CRLF throughout
    return email.message_from_bytes(data)


# --- status_of ------------------------------------------------------------------------

@pytest.mark.parametrize(("recipient", "status"), [
    (bounced("a@x", "550 5.1.1 <a@x>: user unknown"), "5.1.1"),
    (bounced("a@x", "552 5.2.2 mailbox full"), "5.2.2"),
    (bounced("a@x", "554 Transaction failed"), "5.0.0"),
    (bounced("a@x", ""), "4.0.0"),
    (expired("a@x", "451 4.3.0 try later"), "4.3.0"),
    (expired("a@x", "421 Service not available"), "4.4.7"),
    (expired("a@x", ""), "4.4.7"),
    (bounced("a@x", "550 5.7.515 Access denied, SPF/DKIM/DMARC failed"), "5.7.515"),
])
def test_status_of(recipient, status):
    """The route's enhanced code when its reply has one; else 4.4.7 for an expired
    recipient, else the class of the basic code."""
    assert status_of(recipient) == status


# --- build ----------------------------------------------------------------------------

def test_dsn_is_a_delivery_status_report():
    """The DSN is multipart/report; report-type=delivery-status, with the three parts of
    RFC 3464 in order, from mailer-daemon of the domain to the envelope sender."""
    dsn = parse_dsn([bounced("bob@example.com", "550 5.1.1 user unknown")])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert email.utils.parseaddr(dsn["From"])[1] == "mailer-daemon@acme.fr"
    assert email.utils.parseaddr(dsn["To"])[1] == "alice@acme.fr"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["Message-ID"].startswith("<01HQZABC.dsn.") and dsn["Message-ID"].endswith("@acme.fr>")
    assert email.utils.parsedate_to_datetime(dsn["Date"]).timestamp() == NOW
    parts = dsn.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert not dsn.defects


def test_delivery_status_part_has_a_block_per_recipient():
    """One per-message block, then one block per failed recipient with Final-Recipient,
    Action, Status and Diagnostic-Code."""
    failed = [bounced("bob@example.com", "550 5.1.1 <bob@example.com>: user unknown"),
              expired("carol@example.com", "451 4.4.1\r\n connection timed out")]
    dsn = parse_dsn(failed)
    status = dsn.get_payload(1)
    per_message, *per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; relay.acme.fr"
    assert per_message["Arrival-Date"] == email.utils.formatdate(ORIGINAL.created).replace("-0000", "+0000")
    assert len(per_recipient) == 2
    bob, carol = per_recipient
    assert bob["Final-Recipient"] == "rfc822; bob@example.com"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.com>: user unknown"
    assert bob["Remote-MTA"] == "dns; smtp-relay.brevo.com"
    assert carol["Final-Recipient"] == "rfc822; carol@example.com"
    assert carol["Action"] == "failed"
    assert carol["Status"] == "4.4.1"
    assert carol["Diagnostic-Code"] == "smtp; 451 4.4.1 connection timed out"   # one line


def test_recipient_without_a_reply_has_no_diagnostic_code():
    """Diagnostic-Code is left out when the route said nothing."""
    dsn = parse_dsn([expired("bob@example.com", "")])
    [block] = dsn.get_payload(1).get_payload()[1:]
    assert block["Status"] == "4.4.7"
    assert block["Diagnostic-Code"] is None


def test_original_headers_part_holds_the_headers_only():
    """text/rfc822-headers holds the original header section, not the body."""
    dsn = parse_dsn([bounced("bob@example.com", "550 5.1.1 no")])
    part = dsn.get_payload(2)
    headers = part.get_payload(decode=True)
    assert headers.startswith(ORIGINAL_HEADERS)
    assert b"The secret numbers" not in headers
    parsed, _ = split(headers.replace(b"\r\n\r\n", b"\r\n"))
    assert [n for n, _ in parsed] == [b"From", b"To", b"Subject", b"Message-ID"]


def test_human_readable_part_names_the_message_and_recipients():
    """The text part names the queue id and each failed recipient with the route's reply."""
    dsn = parse_dsn([bounced("bob@example.com", "550 5.1.1 unknown"),
                     bounced("carol@example.com", "550 5.1.1 unknown")])
    text = dsn.get_payload(0).get_payload(decode=True).decode()
    assert "01HQZABC" in text and "these recipients" in text
    assert "<bob@example.com>: 550 5.1.1 unknown" in text
    assert "<carol@example.com>: 550 5.1.1 unknown" in text


def test_subject_says_whether_it_expired():
    """An expiry DSN says the delay was too long; a bounce says returned to sender."""
    assert "Undelivered" in parse_dsn([bounced("b@x.fr", "550 5.1.1 no")])["Subject"]
    assert "delayed" in parse_dsn([expired("b@x.fr", "451 4.3.0 later")])["Subject"]


def test_message_without_a_body_section():
    """An original with no blank line still yields its headers in the third part."""
    headless = QueuedMessage(id="Q2", mail_from="a@acme.fr", recipients=[], domain="acme.fr",
                             route="r", body=b"From: a@acme.fr\r\nSubject: x\r\n", created=NOW)
    dsn = parse_dsn([bounced("b@x.fr", "550 5.1.1 no")], headless)
    assert dsn.get_payload(2).get_payload(decode=True).startswith(b"From: a@acme.fr\r\nSubject: x\r\n")


def test_dsn_reads_with_the_modern_policy():
    """The modern email policy parses it without defects too."""
    data = build(ORIGINAL, [bounced("bob@example.com", "550 5.1.1 no")], "relay.acme.fr", "h:25", NOW)
    dsn = email.message_from_bytes(data, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert not dsn.defects and all(not p.defects for p in dsn.iter_parts())

"""relay.feedback.dsn: RFC 3464 delivery status notifications become one event per recipient."""
from __future__ import annotations

import email.utils
from pathlib import Path

import pytest

from relay.feedback.dsn import NotAReport, parse_dsn
from relay.feedback.events import FeedbackKind
from relay.model import QueuedMessage, Recipient, RecipientState
from relay.outbound.dsn import build

DATA = Path(__file__).parents[2] / "data" / "rfc3464"
K = FeedbackKind


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def at(date: str) -> float:
    return email.utils.parsedate_to_datetime(date).timestamp()


# sample -> [(kind, recipient, status, message_id, sender_domain, at)]
EXPECTED = {
    "postfix_user_unknown_5.1.1.eml": [
        (K.BOUNCED_HARD, "bob@example.net", "5.1.1", "<newsletter-2024-11.bob@example.com>",
         "example.com", at("Thu, 14 Nov 2024 09:31:02 +0000"))],
    "mailbox_full_5.2.2.eml": [
        (K.BOUNCED_SOFT, "carol@example.net", "5.2.2", "<inv-2024-118@example.com>",
         "example.com", at("Fri, 15 Nov 2024 05:02:10 -0800"))],
    "delayed_4.4.1.eml": [
        (K.DEFERRED, "dave@example.net", "4.4.1", "<order-5512.shipped@shop.example.com>",
         "shop.example.com", at("Sat, 16 Nov 2024 13:45:20 +0000"))],
    "spamhaus_block_5.7.1.eml": [
        (K.BLOCKED, "erin@example.net", "5.7.1", "<welcome-991@example.com>",
         "example.com", at("Sun, 17 Nov 2024 08:12:40 +0000"))],
    "multi_recipient.eml": [
        (K.BOUNCED_HARD, "frank@example.net", "5.1.1", "<notes-20241118@example.com>",
         "example.com", at("Mon, 18 Nov 2024 10:05:14 +0000")),
        (K.BOUNCED_HARD, "Grace@Example.NET", "5.2.1", "<notes-20241118@example.com>",
         "example.com", at("Mon, 18 Nov 2024 10:05:15 +0000")),
        (K.DELIVERED, "heidi@example.net", "2.0.0", "<notes-20241118@example.com>",
         "example.com", at("Mon, 18 Nov 2024 10:05:16 +0000")),
        (K.DEFERRED, "ivan@example.net", "4.7.0", "<notes-20241118@example.com>",
         "example.com", at("Mon, 18 Nov 2024 10:20:30 +0000")),
        (K.BOUNCED_SOFT, "j\u00f8rgen@example.net", "4.4.7", "<notes-20241118@example.com>",
         "example.com", at("Mon, 18 Nov 2024 10:20:31 +0000"))],
    "relay_generated.eml": [
        (K.BOUNCED_HARD, "kate@example.net", "5.1.1", "<receipt-4410@example.com>",
         "example.com", at("Mon, 18 Nov 2024 09:00:00 +0000")),
        (K.BOUNCED_SOFT, "leo@example.net", "4.3.0", "<receipt-4410@example.com>",
         "example.com", at("Mon, 18 Nov 2024 09:00:00 +0000"))],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples(name):
    """Each sample DSN yields the expected event per recipient block."""
    events = parse_dsn(sample(name))
    assert [(e.kind, e.recipient, e.status, e.message_id, e.sender_domain, e.at)
            for e in events] == EXPECTED[name]
    assert all(e.source == "dsn" for e in events)


def test_every_sample_is_covered():
    """No sample under tests/data/rfc3464 goes untested."""
    assert {p.name for p in DATA.glob("*.eml")} == set(EXPECTED)


def test_reason_is_the_diagnostic_code():
    """The remote's words reach the event, unfolded to one line."""
    [event] = parse_dsn(sample("postfix_user_unknown_5.1.1.eml"))
    assert event.reason == ("smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: "
                            "User unknown in virtual mailbox table")
    [event] = parse_dsn(sample("delayed_4.4.1.eml"))
    assert event.reason.startswith("X-Postfix; connect to mx.example.net")


def test_generic_status_is_refined_by_the_diagnostic_code():
    """Exim's Status 5.0.0 gives way to the remote's 5.7.1, and the block list reading."""
    [event] = parse_dsn(sample("spamhaus_block_5.7.1.eml"))
    assert event.kind is K.BLOCKED and event.status == "5.7.1"


def test_dedupe_keys_are_stable_and_distinct():
    """The same DSN parsed twice gives the same keys; recipients never share one."""
    first = [e.dedupe_key for e in parse_dsn(sample("multi_recipient.eml"))]
    again = [e.dedupe_key for e in parse_dsn(sample("multi_recipient.eml"), received_at=1.0)]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(k.startswith("dsn:") for k in first)


# --- relay's own DSNs ------------------------------------------------------------------------

NOW = 1_700_000_000.0


def relay_dsn(headers: bytes, failed: list[Recipient]) -> bytes:
    original = QueuedMessage(id="01HQZABCDEFGHJKM", mail_from="alice@example.com", recipients=[],
                             domain="example.com", route="brevo",
                             body=headers + b"\r\nBody.\r\n", created=NOW - 60)
    return build(original, failed, "relay.example.com", "smtp-relay.brevo.com:587", NOW)


def test_relay_generator_round_trip():
    """What relay.outbound.dsn.build writes, parse_dsn reads back."""
    data = relay_dsn(b"From: Alice <alice@example.com>\r\nMessage-ID: <m1@example.com>\r\n",
                     [Recipient("bob@example.net", RecipientState.BOUNCED, "550 5.1.1 user unknown"),
                      Recipient("carol@example.net", RecipientState.BOUNCED,
                                "550 5.7.1 blocked using zen.spamhaus.org"),
                      Recipient("dan@example.net", RecipientState.EXPIRED, "421 Service not available")])
    events = parse_dsn(data)
    assert [(e.kind, e.recipient, e.status) for e in events] == [
        (K.BOUNCED_HARD, "bob@example.net", "5.1.1"),
        (K.BLOCKED, "carol@example.net", "5.7.1"),
        (K.BOUNCED_SOFT, "dan@example.net", "4.4.7")]
    assert {(e.message_id, e.sender_domain, e.at) for e in events} == {
        ("<m1@example.com>", "example.com", NOW)}


def test_relay_queue_id_stands_in_for_a_missing_message_id():
    """Without a Message-ID in the original, the X-Relay-Queue-ID per-message field is used."""
    data = relay_dsn(b"From: alice@example.com\r\nSubject: hi\r\n",
                     [Recipient("bob@example.net", RecipientState.BOUNCED, "550 5.1.1 no")])
    [event] = parse_dsn(data)
    assert event.message_id == "01HQZABCDEFGHJKM"
    assert event.sender_domain == "example.com"


# --- shapes and refusals ---------------------------------------------------------------------

def dsn(status_part: str, *, original: str = "", report_type: str = "delivery-status",
        status_type: str = "message/delivery-status", date: str = "") -> bytes:
    parts = [f"--B\r\nContent-Type: {status_type}\r\n\r\n{status_part}"]
    if original:
        parts.append(f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}")
    head = (f"From: mailer-daemon@mx.example.net\r\n{date}MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\r\n\r\n')
    return (head + "\r\n".join(parts) + "\r\n--B--\r\n").encode("utf-8")


def test_global_delivery_status_is_read_too():
    """RFC 6533's message/global-delivery-status (UTF-8, not split by `email`) is parsed."""
    data = dsn("Reporting-MTA: dns; mx.example.net\r\n\r\n"
               "Final-Recipient: utf-8; z\u00fcrich@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n",
               status_type="message/global-delivery-status",
               date="Date: Mon, 18 Nov 2024 10:00:00 +0000\r\n")
    [event] = parse_dsn(data)
    assert (event.kind, event.recipient, event.status) == (K.BOUNCED_HARD, "z\u00fcrich@example.net", "5.1.1")
    assert event.message_id is None and event.sender_domain is None


def test_time_falls_back_to_received_at():
    """With no Last-Attempt-Date and no Date, the caller's reception time is used."""
    data = dsn("Reporting-MTA: dns; mx.example.net\r\n\r\n"
               "Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n")
    [event] = parse_dsn(data, received_at=1234.5)
    assert event.at == 1234.5


def test_blocks_relay_cannot_use_are_skipped():
    """A block without a recipient address or with an unknown Action yields nothing."""
    data = dsn("Reporting-MTA: dns; mx.example.net\r\n\r\n"
               "Action: failed\r\nStatus: 5.1.1\r\n\r\n"
               "Final-Recipient: x400; /C=FR/O=example/\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
               "Final-Recipient: rfc822; bob@example.net\r\nAction: exploded\r\nStatus: 2.0.0\r\n\r\n"
               "Final-Recipient: rfc822; carol@example.net\r\nAction: failed\r\n",
               original="From: Alice <alice@example.com>\r\n")
    [event] = parse_dsn(data, received_at=0.0)
    assert (event.kind, event.recipient, event.status) == (K.BOUNCED_HARD, "carol@example.net", None)
    assert event.sender_domain == "example.com"


def test_failed_with_temporary_status_is_a_soft_bounce():
    """Action failed with a 4.x.x Status (given up after retries) never reads as a dead address."""
    data = dsn("Reporting-MTA: dns; mx.example.net\r\n\r\n"
               "Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 4.4.7\r\n"
               "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n")
    [event] = parse_dsn(data, received_at=0.0)
    assert (event.kind, event.status) == (K.BOUNCED_SOFT, "4.4.7")


@pytest.mark.parametrize("data", [
    b"From: a@example.com\r\nSubject: hello\r\n\r\nJust a message.\r\n",
    b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n",
    b"",
])
def test_anything_else_is_not_a_report(data):
    """A message that is not a multipart/report raises NotAReport (a ValueError)."""
    with pytest.raises(NotAReport):
        parse_dsn(data)


def test_other_report_types_are_not_dsns():
    """An ARF report is a multipart/report too, but not a delivery-status one."""
    with pytest.raises(NotAReport, match="feedback-report"):
        parse_dsn((Path(__file__).parents[2] / "data" / "rfc5965" / "yahoo_abuse.eml").read_bytes())
    with pytest.raises(ValueError):
        parse_dsn(dsn("Feedback-Type: abuse\r\n", report_type="feedback-report"))


def test_report_without_a_status_part_is_refused():
    """A delivery-status report must carry its message/delivery-status part."""
    with pytest.raises(NotAReport, match="no message/delivery-status"):
        parse_dsn(dsn("just text\r\n", status_type="text/plain"))

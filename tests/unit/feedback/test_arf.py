"""relay.feedback.arf: RFC 5965 abuse reports become complaints, one per reported recipient."""
from __future__ import annotations

import email.utils
from pathlib import Path

import pytest

from relay.feedback.arf import NotAReport, parse_arf
from relay.feedback.events import FeedbackKind

DATA = Path(__file__).parents[2] / "data" / "rfc5965"
K = FeedbackKind


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def at(date: str) -> float:
    return email.utils.parsedate_to_datetime(date).timestamp()


# sample -> [(recipient, message_id, sender_domain, at, reason)]
EXPECTED = {
    "yahoo_abuse.eml": [
        ("mallory@example.net", "<deals-w47.mallory@example.com>", "example.com",
         at("Tue, 19 Nov 2024 15:58:11 +0000"), "abuse report (Yahoo!-Mail-Feedback/2.0)")],
    "microsoft_abuse.eml": [
        ("niaj@example.net", "<bf-preview-3391@example.com>", "example.com",
         at("Wed, 20 Nov 2024 07:10:02 -0800"), "abuse report (Hotmail FBL)")],
    "headers_only_abuse.eml": [
        ("peggy@example.net", "<last-chance-77@news.example.com>", "news.example.com",
         at("Fri, 22 Nov 2024 18:20:41 +0100"), "abuse report (ISP-FBL/3.1)")],
    "not_spam.eml": [],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_samples(name):
    """Each sample report yields its complaints (none for not-spam)."""
    events = parse_arf(sample(name))
    assert [(e.recipient, e.message_id, e.sender_domain, e.at, e.reason) for e in events] == EXPECTED[name]
    assert all(e.kind is K.COMPLAINED and e.source == "arf" and e.status is None for e in events)


def test_every_sample_is_covered():
    """No sample under tests/data/rfc5965 goes untested."""
    assert {p.name for p in DATA.glob("*.eml")} == set(EXPECTED)


def test_microsoft_recipient_comes_from_the_original():
    """JMRP names no Original-Rcpt-To: the original's X-HmXmrOriginalRecipient is the one who
    complained, not the report's own (the feedback loop's address)."""
    [event] = parse_arf(sample("microsoft_abuse.eml"))
    assert event.recipient == "niaj@example.net"


def test_dedupe_key_is_stable():
    """The same report parsed twice gives the same key."""
    [a] = parse_arf(sample("yahoo_abuse.eml"))
    [b] = parse_arf(sample("yahoo_abuse.eml"), received_at=5.0)
    assert a.dedupe_key == b.dedupe_key and a.dedupe_key.startswith("arf:")


# --- built reports ---------------------------------------------------------------------------

def arf(fields: str, original: str = "", *, report_type: str = "feedback-report",
        original_type: str = "text/rfc822-headers", date: str = "") -> bytes:
    parts = ["--B\r\nContent-Type: text/plain\r\n\r\nA report.\r\n",
             f"--B\r\nContent-Type: message/feedback-report\r\n\r\n{fields}"]
    if original:
        parts.append(f"--B\r\nContent-Type: {original_type}\r\n\r\n{original}")
    head = (f"From: fbl@isp.example.net\r\n{date}MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={report_type}; boundary="B"\r\n\r\n')
    return (head + "\r\n".join(parts) + "\r\n--B--\r\n").encode()


@pytest.mark.parametrize("feedback_type", ["abuse", "fraud", "other", "virus", "Abuse"])
def test_complaint_types(feedback_type):
    """abuse, fraud, other and virus are complaints (RFC 5965 §7.3), in any case."""
    data = arf(f"Feedback-Type: {feedback_type}\r\nOriginal-Rcpt-To: bob@example.net\r\n"
               "Arrival-Date: Tue, 19 Nov 2024 15:58:11 +0000\r\n")
    [event] = parse_arf(data)
    assert event.kind is K.COMPLAINED and event.recipient == "bob@example.net"


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_types_that_are_not_complaints(feedback_type):
    """not-spam and other report types (RFC 6591 auth-failure) yield no event."""
    data = arf(f"Feedback-Type: {feedback_type}\r\nOriginal-Rcpt-To: bob@example.net\r\n")
    assert parse_arf(data) == []


def test_each_original_rcpt_to_is_a_complaint():
    """Original-Rcpt-To may repeat: one event per distinct recipient."""
    data = arf("Feedback-Type: abuse\r\nOriginal-Rcpt-To: <bob@example.net>\r\n"
               "Original-Rcpt-To: carol@example.net\r\nOriginal-Rcpt-To: BOB@example.net\r\n",
               "From: news@example.com\r\nTo: dave@example.net\r\n")
    events = parse_arf(data, received_at=0.0)
    assert [e.recipient for e in events] == ["bob@example.net", "carol@example.net"]
    assert len({e.dedupe_key for e in events}) == 2


def test_original_to_is_the_last_resort():
    """Without Original-Rcpt-To or the Microsoft header, the original's To names the recipient."""
    data = arf("Feedback-Type: abuse\r\n", "From: news@example.com\r\nTo: Dave <dave@example.net>\r\n")
    [event] = parse_arf(data, received_at=0.0)
    assert event.recipient == "dave@example.net"


def test_report_naming_no_recipient_yields_nothing():
    """No recipient anywhere (a redacted report): nothing to suppress, no event."""
    data = arf("Feedback-Type: abuse\r\n", "From: news@example.com\r\nSubject: x\r\n")
    assert parse_arf(data) == []


def test_sender_domain_fallbacks():
    """Without the original's From: Reported-Domain, then the Original-Mail-From's domain."""
    reported = arf("Feedback-Type: abuse\r\nOriginal-Rcpt-To: bob@example.net\r\n"
                   "Reported-Domain: Example.COM\r\nOriginal-Mail-From: <b@bounce.example.org>\r\n")
    mail_from = arf("Feedback-Type: abuse\r\nOriginal-Rcpt-To: bob@example.net\r\n"
                    "Original-Mail-From: <b@bounce.example.org>\r\n")
    assert parse_arf(reported, received_at=0.0)[0].sender_domain == "example.com"
    assert parse_arf(mail_from, received_at=0.0)[0].sender_domain == "bounce.example.org"
    bare = arf("Feedback-Type: abuse\r\nOriginal-Rcpt-To: bob@example.net\r\n")
    [event] = parse_arf(bare, received_at=0.0)
    assert event.sender_domain is None and event.message_id is None


def test_time_fallbacks():
    """Arrival-Date, else Received-Date, else the report's Date, else the reception time."""
    rcpt = "Feedback-Type: abuse\r\nOriginal-Rcpt-To: bob@example.net\r\n"
    received = arf(rcpt + "Received-Date: Tue, 19 Nov 2024 15:58:11 +0000\r\n")
    dated = arf(rcpt + "Arrival-Date: not a date\r\n", date="Date: Wed, 20 Nov 2024 07:33:10 -0800\r\n")
    assert parse_arf(received)[0].at == at("Tue, 19 Nov 2024 15:58:11 +0000")
    assert parse_arf(dated)[0].at == at("Wed, 20 Nov 2024 07:33:10 -0800")
    assert parse_arf(arf(rcpt), received_at=42.0)[0].at == 42.0


def test_original_as_message_rfc822():
    """The original may come whole (message/rfc822): its Message-ID and From are read."""
    data = arf("Feedback-Type: abuse\r\n",
               "From: Shop <shop@store.example.com>\r\nTo: erin@example.net\r\n"
               "Message-ID: <o1@store.example.com>\r\n\r\nBody.\r\n",
               original_type="message/rfc822")
    [event] = parse_arf(data, received_at=0.0)
    assert (event.recipient, event.message_id, event.sender_domain) == (
        "erin@example.net", "<o1@store.example.com>", "store.example.com")


def test_dsn_is_not_an_arf_report():
    """A delivery-status report, a plain message, a report without fields or without a
    Feedback-Type raise NotAReport."""
    with pytest.raises(NotAReport):
        parse_arf((Path(__file__).parents[2] / "data" / "rfc3464" / "delayed_4.4.1.eml").read_bytes())
    with pytest.raises(NotAReport):
        parse_arf(b"From: a@example.com\r\n\r\nhello\r\n")
    with pytest.raises(NotAReport, match="Feedback-Type"):
        parse_arf(arf("User-Agent: x\r\n"))
    no_fields = (b"From: a@example.net\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; "
                 b"report-type=feedback-report; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain"
                 b"\r\n\r\nx\r\n--B--\r\n")
    with pytest.raises(NotAReport, match="no message/feedback-report"):
        parse_arf(no_fields)

"""Fuzzing the DSN (RFC 3464) and ARF (RFC 5965) readers and `read_report`.

Whatever bytes arrive at a feedback address, `parse_dsn`, `parse_arf` and `read_report`
either return well-formed events or raise `NotAReport`: never another exception. Inputs are
arbitrary bytes, mutations of the real samples in tests/data/rfc3464 and rfc5965 (slices
cut, repeated or moved, bytes flipped, NULs, invalid UTF-8, bare CR/LF, truncation) and
reports assembled from random field values. A well-formed event names an address with an
`@` and no control character, a finite time, a bounded reason, an RFC 3463 status or none,
and a dedupe key of its source.

Budgets: 300 examples on samples and their mutations, 300 on generated reports.
"""
from __future__ import annotations

import math
import re
import smtplib
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from relay.feedback import arf, dsn, reports
from relay.feedback.events import FeedbackEvent, FeedbackKind
from tests.fuzz import budget

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLES = sorted((DATA / "rfc3464").glob("*.eml")) + sorted((DATA / "rfc5965").glob("*.eml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES]
STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
KEY = re.compile(r"^(dsn|arf):[0-9a-f]{32}$")
NOW = 1_732_000_000.0

# Bytes that parsers stumble on: line ends of every kind, NUL, invalid UTF-8, MIME syntax.
NASTY = [b"\r\n", b"\n", b"\r", b"\x00", b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80", b"--", b";",
         b'"', b"=?utf-8?q?=C3?=", b"=?x?b?!!?=", b"\\x{110000}", b"\\x{0}", b"\\x{D800}",
         b"\\x{FFFFFF}", b"boundary=", b"Content-Type: multipart/report; report-type=",
         b"Content-Transfer-Encoding: base64\r\n", b"\r\n\r\n", b"\t", b" " * 200,
         b"<>", b"@", b"utf-8; ", b"rfc822; ", b"Action: failed\r\n", b"Status: 5.1.1\r\n"]


@st.composite
def mutated_sample(draw) -> bytes:
    """A real report with 1 to 6 mutations applied."""
    data = bytearray(draw(st.sampled_from(SAMPLE_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        size = len(data)
        i = draw(st.integers(0, size))
        j = draw(st.integers(i, min(size, i + 400)))
        how = draw(st.sampled_from(["cut", "repeat", "insert", "flip", "truncate", "move",
                                    "lf", "cr"]))
        if how == "cut":
            del data[i:j]
        elif how == "repeat":
            data[i:i] = data[i:j] * draw(st.integers(1, 20))
        elif how == "insert":
            data[i:i] = draw(st.sampled_from(NASTY) | st.binary(max_size=40))
        elif how == "flip" and i < size:
            data[i] = draw(st.integers(0, 255))
        elif how == "truncate":
            del data[i:]
        elif how == "move":
            piece = bytes(data[i:j])
            del data[i:j]
            k = draw(st.integers(0, len(data)))
            data[k:k] = piece
        elif how == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
        elif how == "cr":
            data = bytearray(bytes(data).replace(b"\n", b"\r"))
    return bytes(data)


_field_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["rfc822; bob@example.net", "utf-8; j\\x{F8}rgen@example.net",
                     "utf-8; a\\x{110000}@example.net", "utf-8; a\\x{0A}b@example.net",
                     "utf-8; a\\x{D800}@x.net", "failed", "delayed", "relayed", "5.1.1",
                     "4.4.7", "9.9.9", "smtp; 550 5.1.1 no", "smtp; 999 9.1.1 x", "x-unix; 1",
                     "abuse", "not-spam", "", "Tue, 19 Nov 2024 15:58:11 +0000",
                     "Tue, 99 Nov 99999 99:99:99 +9999", "<a@b.c>"]),
)


@st.composite
def generated_report(draw) -> bytes:
    """A multipart/report of either type, its fields filled with random or edge values."""
    kind = draw(st.sampled_from(["delivery-status", "feedback-report"]))
    names = (["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
              "Last-Attempt-Date", "X-Relay-Queue-ID"] if kind == "delivery-status" else
             ["Feedback-Type", "User-Agent", "Original-Rcpt-To", "Original-Mail-From",
              "Arrival-Date", "Received-Date", "Reported-Domain"])
    blocks = []
    for _ in range(draw(st.integers(1, 4))):
        fields = draw(st.lists(st.tuples(st.sampled_from(names), _field_text), max_size=8))
        blocks.append("".join(f"{n}: {v}\r\n" for n, v in fields))
    part_type = draw(st.sampled_from([f"message/{kind}", "message/global-delivery-status",
                                      "text/plain"]))
    original = draw(st.sampled_from(["message/rfc822", "text/rfc822-headers",
                                     "message/global-headers", "message/global"]))
    original_headers = "".join(f"{n}: {v}\r\n" for n, v in draw(st.lists(st.tuples(
        st.sampled_from(["From", "To", "Message-ID", "X-HmXmrOriginalRecipient"]),
        _field_text), max_size=5)))
    encoding = draw(st.sampled_from(["", "Content-Transfer-Encoding: base64\r\n",
                                     "Content-Transfer-Encoding: quoted-printable\r\n"]))
    text = (f"From: mailer-daemon@mx.example.net\r\nDate: {draw(_field_text)}\r\n"
            f"Message-ID: {draw(_field_text)}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type={kind}; boundary=\"b\"\r\n\r\n"
            f"--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
            f"--b\r\nContent-Type: {part_type}\r\n{encoding}\r\n" + "\r\n".join(blocks) +
            f"\r\n--b\r\nContent-Type: {original}\r\n\r\n{original_headers}\r\nbody\r\n--b--\r\n")
    return text.encode("utf-8", "surrogatepass")


def check_events(events: list) -> None:
    """What the intake stores: every field of every event usable as it is."""
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, FeedbackEvent)
        assert isinstance(event.kind, FeedbackKind)
        assert event.source in ("dsn", "arf")
        assert isinstance(event.recipient, str) and "@" in event.recipient, event
        assert event.recipient.isprintable(), event.recipient          # no CR, LF, NUL
        assert event.recipient.encode("utf-8"), event.recipient        # no lone surrogate
        assert isinstance(event.at, float) and math.isfinite(event.at), event
        assert event.message_id is None or isinstance(event.message_id, str)
        assert isinstance(event.reason, str) and len(event.reason) <= 1000
        assert event.status is None or STATUS.match(event.status), event
        assert KEY.match(event.dedupe_key), event
        assert event.sender_domain is None or (event.sender_domain
                                               and not any(c.isspace() for c in event.sender_domain))


def read_all(data: bytes) -> None:
    """Each reader returns well-formed events or raises NotAReport; nothing else."""
    for read in (lambda d: dsn.parse_dsn(d, NOW), lambda d: arf.parse_arf(d, NOW),
                 lambda d: reports.read_report(d, NOW)):
        try:
            events = read(data)
        except reports.NotAReport:
            continue
        check_events(events)


@budget(300)
@given(data=st.one_of(st.binary(max_size=3000), mutated_sample(), st.sampled_from(SAMPLE_BYTES)))
def test_arbitrary_bytes_and_mutated_samples_give_events_or_not_a_report(data):
    """Random bytes and damaged real reports: events or NotAReport, never another error."""
    read_all(data)


@budget(300)
@given(data=generated_report())
def test_generated_reports_give_well_formed_events(data):
    """Reports whose every field is random (addresses, escapes, dates, codes, encodings)."""
    read_all(data)


def nested_report(depth: int, report_type: str) -> bytes:
    """A multipart/report whose first part opens `depth` nested multiparts."""
    head = (b"From: mailer-daemon@mx.example.net\r\nContent-Type: multipart/report; "
            b"report-type=" + report_type.encode() + b'; boundary="b"\r\n\r\n--b\r\n')
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(depth))
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nx\r\n" + closing + b"--b--\r\n"


def test_deeply_nested_reports_are_not_a_report():
    """Regression: 1000 nested multiparts made `email` raise RecursionError out of every
    reader (a 451 on the feedback listener, a traceback in `relay feedback`). Now the
    readers say NotAReport, naming the nesting."""
    for report_type in ("delivery-status", "feedback-report"):       # read_report: both
        with pytest.raises(reports.NotAReport, match="nested too deep"):
            reports.read_report(nested_report(1000, report_type), NOW)


def test_a_deeply_nested_report_to_the_feedback_listener_is_refused_550(make_relay, upstream):
    """The same over a socket: the feedback listener refused such a report with 451 4.3.0
    (an internal error: the sender retries it for days); it is no report: 550 5.7.1."""
    relay = make_relay(**{"server.listeners": [
        {"name": "local", "address": "127.0.0.1", "port": 0, "tls": "none"},
        {"name": "feedback", "address": "127.0.0.1", "port": 0, "tls": "none", "role": "feedback"}]})
    with smtplib.SMTP("127.0.0.1", relay.port("feedback"), timeout=30) as client:
        client.ehlo("mx.example.net")
        assert client.mail("")[0] == 250
        assert client.rcpt("bounces@relay.test")[0] == 250
        code, text = client.data(nested_report(1000, "delivery-status"))
    assert (code, text[:5]) == (550, b"5.7.1"), text


def dsn_for(final_recipient: str) -> bytes:
    return (b"From: mailer-daemon@mx.example.net\r\nContent-Type: multipart/report; "
            b'report-type=delivery-status; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
            b"Final-Recipient: " + final_recipient.encode() + b"\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\n\r\n--b--\r\n")


def test_utf8_escapes_that_name_no_character_name_no_recipient():
    """Regression: `\\x{110000}` in a utf-8 Final-Recipient (RFC 6533 §3) raised ValueError
    out of parse_dsn; escapes of controls or lone surrogates named unusable "addresses". Such
    a block is skipped, and the rest of the report still counts."""
    for bad in ("utf-8; a\\x{110000}@example.net", "utf-8; a\\x{FFFFFF}@example.net",
                "utf-8; a\\x{0A}b@example.net", "utf-8; a\\x{D800}@example.net",
                "rfc822; @\x1b", "rfc822; bob@", "rfc822; @example.net"):
        assert dsn.parse_dsn(dsn_for(bad), NOW) == [], bad
    [event] = dsn.parse_dsn(dsn_for("utf-8; j\\x{F8}rgen@example.net"), NOW)
    assert event.recipient == "jørgen@example.net"

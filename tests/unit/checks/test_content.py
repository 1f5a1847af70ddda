"""relay.checks.content: line endings, header/body split, From sanity, added fields."""
from __future__ import annotations

import email.utils

import pytest

from relay import replies
from relay.checks import content
from relay.checks.content import add_missing, normalize_line_endings, parse, received, split
from relay.errors import PolicyError

NOW = 1_700_000_000.0


# --- line endings ---------------------------------------------------------------------

def test_bare_lf_becomes_crlf():
    """Bare LF line ends are repaired so the signature covers what the provider sees."""
    assert normalize_line_endings(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"


def test_crlf_message_is_unchanged():
    """A message that is already CRLF is returned as is."""
    data = b"From: a@b.fr\r\n\r\nx\r\ny\r\n"
    assert normalize_line_endings(data) is data


def test_bare_cr_becomes_crlf():
    """A lone CR becomes CRLF, as it will on the wire, so the signature covers what is sent."""
    assert normalize_line_endings(b"From: a@b.fr\r\n\r\nx\ry\r\n") == b"From: a@b.fr\r\n\r\nx\r\ny\r\n"


# --- split ----------------------------------------------------------------------------

def test_split_headers_and_body():
    """Fields keep their name and raw value (after the colon); the body follows the blank line."""
    headers, body = split(b"From: a@b.fr\r\nSubject:hi\r\n\r\nline 1\r\n\r\nline 3\r\n")
    assert headers == [(b"From", b" a@b.fr"), (b"Subject", b"hi")]
    assert body == b"line 1\r\n\r\nline 3\r\n"


def test_split_keeps_folded_headers_whole():
    """A continuation line belongs to the field above it, folding CRLF kept."""
    headers, body = split(b"Subject: one\r\n two\r\n\tthree\r\nTo: x@y.fr\r\n\r\nbody\r\n")
    assert headers == [(b"Subject", b" one\r\n two\r\n\tthree"), (b"To", b" x@y.fr")]
    assert body == b"body\r\n"


def test_split_non_header_line_ends_the_header_section_without_dropping_it():
    """A line that is not a field starts the body there: nothing is lost."""
    data = b"From: a@b.fr\r\nthis is not a header\r\nTo: x@y.fr\r\n\r\nrest\r\n"
    headers, body = split(data)
    assert headers == [(b"From", b" a@b.fr")]
    assert body == b"this is not a header\r\nTo: x@y.fr\r\n\r\nrest\r\n"


def test_split_bad_field_name_ends_the_header_section():
    """A colon after an invalid name (space inside) does not make a field."""
    headers, body = split(b"From: a@b.fr\r\nBad Name: x\r\n\r\n")
    assert headers == [(b"From", b" a@b.fr")]
    assert body == b"Bad Name: x\r\n\r\n"


def test_split_message_with_no_body():
    """A message that is all header (with or without the blank line) has an empty body."""
    assert split(b"From: a@b.fr\r\nTo: x@y.fr\r\n") == ([(b"From", b" a@b.fr"), (b"To", b" x@y.fr")], b"")
    assert split(b"From: a@b.fr\r\n\r\n") == ([(b"From", b" a@b.fr")], b"")
    assert split(b"From: a@b.fr") == ([(b"From", b" a@b.fr")], b"")


def test_split_leading_continuation_line_is_body():
    """A folded line with no field above it cannot be a header."""
    assert split(b" orphan\r\nFrom: a@b.fr\r\n") == ([], b" orphan\r\nFrom: a@b.fr\r\n")


# --- parse ----------------------------------------------------------------------------

def assert_refused(data: bytes, reply) -> None:
    with pytest.raises(PolicyError) as info:
        parse(data)
    assert info.value.reply == reply
    assert (info.value.reply.code, info.value.reply.enhanced) == (550, "5.6.0")


def test_parse_finds_the_from_address():
    """The one From address is extracted, display name and comments aside."""
    parsed = parse(b"From: \"Alice A.\" <alice@acme.fr> (sales)\r\nTo: b@x.fr\r\n\r\nhi\r\n")
    assert parsed.from_address == "alice@acme.fr"
    assert parsed.get(b"to") == [b" b@x.fr"]


def test_parse_no_from():
    """No From field: 550 5.6.0."""
    assert_refused(b"To: b@x.fr\r\nSubject: x\r\n\r\nhi\r\n", replies.R550_NO_FROM)


def test_parse_two_from_fields():
    """Two From fields, whatever their case: 550 5.6.0."""
    assert_refused(b"From: a@acme.fr\r\nfrom: b@acme.fr\r\n\r\nhi\r\n", replies.R550_MANY_FROM)


def test_parse_from_with_two_addresses():
    """A From listing two mailboxes (legal with a Sender field, refused here): 550 5.6.0."""
    assert_refused(b"From: a@acme.fr, b@acme.fr\r\n\r\nhi\r\n", replies.R550_BAD_FROM)


@pytest.mark.parametrize("value", [
    b"Team: a@acme.fr, b@acme.fr;", b"undisclosed-recipients:;", b"", b"Alice", b"<alice>",
])
def test_parse_from_without_exactly_one_address(value):
    """Group syntax with several or no members, and addresses without @, are refused."""
    assert_refused(b"From: " + value + b"\r\n\r\nhi\r\n", replies.R550_BAD_FROM)


def test_parse_from_folded_across_lines():
    """A folded From is read as one value."""
    parsed = parse(b"From: Alice\r\n <alice@acme.fr>\r\n\r\n")
    assert parsed.from_address == "alice@acme.fr"


def test_parse_keeps_8bit_header_bytes():
    """8-bit bytes in headers pass through untouched, and the From address is still found."""
    data = b"From: Ren\xe9 Caf\xc3\xa9 <rene@acme.fr>\r\nSubject: caf\xc3\xa9 \xff\r\n\r\nbody\r\n"
    parsed = parse(data)
    assert parsed.from_address == "rene@acme.fr"
    assert parsed.get(b"Subject") == [b" caf\xc3\xa9 \xff"]
    assert parsed.serialize() == data


def test_parse_repairs_line_ends_and_terminates_the_body():
    """Bare LFs become CRLF and a body missing its final CRLF gets one."""
    parsed = parse(b"From: a@acme.fr\nSubject: x\n\nline\nlast")
    assert parsed.headers == [(b"From", b" a@acme.fr"), (b"Subject", b" x")]
    assert parsed.body == b"line\r\nlast\r\n"


def test_serialize_prepends_fields():
    """serialize() puts the given complete fields above the message's own."""
    parsed = parse(b"From: a@acme.fr\r\n\r\nhi\r\n")
    out = parsed.serialize([b"DKIM-Signature: v=1\r\n", b"Received: x\r\n"])
    assert out == b"DKIM-Signature: v=1\r\nReceived: x\r\nFrom: a@acme.fr\r\n\r\nhi\r\n"


# --- add_missing ----------------------------------------------------------------------

def test_add_missing_adds_date_and_message_id():
    """Without Date and Message-ID, both are added: the Date of `now`, and an id made of
    the queue id at the From domain."""
    parsed = parse(b"From: a@Acme.fr\r\n\r\nhi\r\n")
    add_missing(parsed, "01ABC", NOW)
    [date] = parsed.get(b"Date")
    assert email.utils.parsedate_to_datetime(date.decode().strip()).timestamp() == NOW
    assert parsed.get(b"Message-ID") == [b" <01ABC@Acme.fr>"]


def test_add_missing_keeps_existing_fields():
    """Fields the application set, in any case, are neither replaced nor duplicated."""
    data = b"From: a@acme.fr\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\n"
    parsed = parse(data)
    add_missing(parsed, "01ABC", NOW)
    assert parsed.serialize() == data


def test_add_missing_adds_only_what_is_missing():
    """A message with a Date but no Message-ID gets just the Message-ID."""
    parsed = parse(b"From: a@acme.fr\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n")
    add_missing(parsed, "Q", NOW)
    assert len(parsed.get(b"date")) == 1
    assert parsed.get(b"message-id") == [b" <Q@acme.fr>"]


# --- received -------------------------------------------------------------------------

def test_received_field_shape():
    """An RFC 5321 §4.4 trace field: from helo ([ip]) by host (relay) with proto id Q
    for <rcpt>; date, folded, CRLF-terminated."""
    field = received("app.acme.fr", "10.0.0.7", "relay.acme.fr", "ESMTPSA", "01ABC",
                     ["bob@example.com"], NOW)
    assert field == (b"Received: from app.acme.fr ([10.0.0.7])\r\n"
                     b"\tby relay.acme.fr (relay) with ESMTPSA id 01ABC\r\n"
                     b"\tfor <bob@example.com>;\r\n"
                     b"\t" + email.utils.formatdate(NOW).replace("-0000", "+0000").encode() + b"\r\n")
    headers, _ = split(field + b"\r\n")
    assert [n for n, _ in headers] == [b"Received"]


def test_received_names_no_recipient_when_there_are_several():
    """With several recipients none is named (it would disclose the others' existence)."""
    field = received("h", "::1", "relay", "ESMTP", "Q", ["a@x.fr", "b@x.fr"], NOW)
    assert b"for <" not in field
    assert b"id Q;\r\n\t" in field


def test_received_helo_cannot_inject_fields():
    """The client's HELO is reduced to hostname characters: no CRLF, no spaces."""
    field = received("evil\r\nX-Injected: yes (x)", "1.2.3.4", "relay", "ESMTP", "Q", [], NOW)
    assert b"X-Injected: " not in field
    assert field.count(b"\r\n") == 3
    assert field.startswith(b"Received: from evilX-Injected:yesx ([1.2.3.4])")
    assert received("", "1.2.3.4", "relay", "ESMTP", "Q", [], NOW).startswith(
        b"Received: from unknown ([1.2.3.4])")
    assert content.received("a" * 300, "1.2.3.4", "r", "ESMTP", "Q", [], NOW).startswith(
        b"Received: from " + b"a" * 100 + b" (")

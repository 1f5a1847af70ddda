"""relay.checks.line_length: no line over 998 characters (RFC 5322 §2.1.1) leaves relay; the
text parts that hold one are re-encoded as quoted-printable (RFC 2045 §6.7), the same
content once decoded; everything else is left byte for byte."""
from __future__ import annotations

import email
import email.policy
import quopri
import random

from relay.checks import content, line_length

LONG = "<p>" + "x" * 2000 + "</p>"


def longest(body: bytes) -> int:
    return max(len(line) for line in body.split(b"\r\n"))


def test_too_long_finds_exactly_the_lines_over_998_characters():
    """Against the plain definition (split at CRLF, measure), on bodies built around the
    limit: lines of 998, 999 and 1,000, a last line without CRLF, bare CR and LF (part of
    a line: only CRLF ends one), and bodies of fewer than 998 bytes."""
    rng = random.Random(5321)
    pieces = [0, 1, 76, 997, 998, 999, 1000, 1997]
    for _ in range(3000):
        lines = []
        for _ in range(rng.randint(0, 6)):
            line = bytearray(b"x" * rng.choice(pieces))
            for _ in range(rng.randint(0, 2)):
                if line:
                    line[rng.randrange(len(line))] = rng.choice(b"\r\n")
            lines.append(bytes(line))
        body = b"\r\n".join(lines) + rng.choice([b"", b"\r\n", b"\r", b"\n"])
        expected = len(body) > line_length.LIMIT and longest(body) > line_length.LIMIT
        assert line_length.too_long(body) is expected, [len(line) for line in lines]
    assert not line_length.too_long(b"x" * 998 + b"\r\n" + b"y" * 998)
    assert line_length.too_long(b"x" * 998 + b"\r\n" + b"y" * 999)
    assert line_length.too_long(b"x" * 999 + b"\r\n")
    assert not line_length.too_long(b"\r\n" * 2000)


def test_a_single_part_message_is_re_encoded_and_says_so():
    parsed = content.parse(f"From: a@acme.fr\r\nSubject: s\r\n\r\nhi\r\n{LONG}\r\ncaf\u00e9\r\n".encode())
    assert line_length.shorten(parsed)
    assert longest(parsed.body) <= 76
    assert parsed.get(b"Content-Transfer-Encoding") == [b" quoted-printable"]
    assert parsed.get(b"MIME-Version") == [b" 1.0"]
    assert quopri.decodestring(parsed.body) == f"hi\r\n{LONG}\r\ncaf\u00e9\r\n".encode()


def test_an_existing_transfer_encoding_field_is_replaced_not_repeated():
    parsed = content.parse(("From: a@acme.fr\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit"
                            f"\r\n\r\n{LONG}\r\n").encode())
    assert line_length.shorten(parsed)
    assert parsed.get(b"Content-Transfer-Encoding") == [b" quoted-printable"]
    assert parsed.get(b"MIME-Version") == [b" 1.0"]


MULTIPART = ("From: a@acme.fr\r\nMIME-Version: 1.0\r\n"
             "Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\r\n"
             "This is a MIME message.\r\n"
             "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
             "--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             f"{LONG}\r\n--b1--\r\n")


def test_only_the_part_with_long_lines_is_re_encoded():
    parsed = content.parse(MULTIPART.encode())
    assert line_length.shorten(parsed)
    assert longest(parsed.body) <= 76
    assert parsed.body.startswith(b"This is a MIME message.\r\n--b1\r\nContent-Type: text/plain;"
                                  b" charset=utf-8\r\n\r\nHello\r\n--b1\r\n")   # untouched
    message = email.message_from_bytes(parsed.serialize(), policy=email.policy.default)
    plain, html = message.iter_parts()
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content() == LONG       # the CRLF before the boundary is the boundary's
    assert plain.get_content().strip() == "Hello"


def test_base64_parts_and_short_lines_are_left_alone():
    short = content.parse(b"From: a@acme.fr\r\n\r\nshort lines\r\nonly\r\n")
    before = short.serialize()
    assert not line_length.shorten(short) and short.serialize() == before
    long_b64 = content.parse(("From: a@acme.fr\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                              + "QUFB" * 400 + "\r\n").encode())
    before = long_b64.serialize()
    assert not line_length.shorten(long_b64) and long_b64.serialize() == before


def test_a_multipart_message_without_its_boundary_is_left_as_it_is():
    parsed = content.parse(("From: a@acme.fr\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n"
                            f"no boundary anywhere {LONG}\r\n").encode())
    before = parsed.serialize()
    assert not line_length.shorten(parsed)
    assert parsed.serialize() == before


def test_only_text_is_re_encoded():
    """Quoted-printable with line breaks is for text (RFC 2045 §6.7): a long-lined part of
    another type is left alone, and then so is the message."""
    parsed = content.parse(("From: a@acme.fr\r\nContent-Type: application/json\r\n\r\n"
                            f"{LONG}\r\n").encode())
    before = parsed.serialize()
    assert not line_length.shorten(parsed) and parsed.serialize() == before
    mixed = content.parse(MULTIPART.replace("text/html", "application/x-html").encode())
    before = mixed.serialize()
    assert not line_length.shorten(mixed) and mixed.serialize() == before

"""Fuzzing the header checks and the MIME re-encoding applied to every message before signing.

`content.parse` either returns the message's fields and body or refuses it with relay's own
`PolicyError` (550 5.6.0: From missing, repeated or unusable); `add_missing`, `serialize`,
`received` and `line_length.shorten` never raise. What is serialized has CRLF line ends
only (no bare CR or LF that a downstream server could read as an end of data), reads back
as the same fields and body, and grows by at most the line-end repair and the added fields.
Memory is bounded relative to the input (tracemalloc peak), never by a wall clock.

Inputs: arbitrary bytes; messages built from random fields (long lines, huge folded headers,
NULs, invalid UTF-8, every line end) around random MIME trees; hand-made extremes (1000
nested multiparts, a From with comments nested 10000 deep, a field folded 100000 times).

Budgets: 300 examples for parse/serialize, 150 for line-length re-encoding, 60 under
tracemalloc.
"""
from __future__ import annotations

import tracemalloc

from hypothesis import given, strategies as st

from relay import replies
from relay.checks import content, line_length
from relay.errors import PolicyError
from tests.fuzz import budget

NOW = 1_700_000_000.0
FROM_REPLIES = {replies.R550_NO_FROM, replies.R550_MANY_FROM, replies.R550_BAD_FROM}

_line_end = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\r\n", b"\n\r"])
_nasty_text = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\x00", b"\xff\xfe\xfd", b"\xc3(", b"=?utf-8?b?w6k=?=", b"a" * 1200,
                     b"x" * 5000, b"<billing@acme.fr>", b"billing@acme.fr", b"(((", b'"']),
)
_field_name = st.sampled_from([b"To", b"Subject", b"Date", b"Message-ID", b"Content-Type",
                               b"Content-Transfer-Encoding", b"MIME-Version", b"X-Mailer",
                               b"Received", b"from", b"FROM", b"Bad Name", b"", b"\xc3\xa9",
                               b"X\x00Y", b"Subject "])
_from_value = st.sampled_from([b" billing@acme.fr"] * 4 + [b" Acme <billing@acme.fr>",
                               b" =?utf-8?q?Soci=C3=A9t=C3=A9?= <billing@acme.fr>",
                               b" \xc3\xa9lodie@acme.fr", b" <billing@acme.fr>, <b@acme.fr>",
                               b" (c) billing@acme.fr (d)", b" billing@acme.fr\x00",
                               b' "a\\" b" <billing@acme.fr>', b" <>", b"", b" @", b" a@b@c"])


@st.composite
def mime_body(draw, depth: int = 0) -> tuple[bytes, bytes]:
    """(Content-Type value, body): a text leaf or a multipart of random parts."""
    if depth >= 4 or (depth and not draw(st.booleans())):
        subtype = draw(st.sampled_from([b"text/plain", b"text/html", b"application/pdf",
                                        b"image/png", b"text/plain; charset=utf-8"]))
        lines = draw(st.lists(st.one_of(_nasty_text, st.integers(900, 3000).map(lambda n: b"y" * n)),
                              max_size=6))
        return subtype, b"\r\n".join(lines) + b"\r\n"
    boundary = draw(st.sampled_from([b"b", b"==x==", b"", b"a" * 80, b"--", b'"q"']))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        kind, body = draw(mime_body(depth + 1))
        cte = draw(st.sampled_from([b"", b"Content-Transfer-Encoding: 8bit\r\n",
                                    b"Content-Transfer-Encoding: base64\r\n",
                                    b"Content-Transfer-Encoding: quoted-printable\r\n",
                                    b"Content-Transfer-Encoding: x-garbage\r\n"]))
        parts.append(b"--" + boundary + b"\r\nContent-Type: " + kind + b"\r\n" + cte + b"\r\n" + body)
    closing = draw(st.sampled_from([b"--" + boundary + b"--\r\n", b""]))
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report"]))
    return (b"multipart/" + subtype + b'; boundary="' + boundary + b'"',
            b"preamble\r\n" + b"".join(parts) + closing)


@st.composite
def message(draw) -> bytes:
    """A message from random fields (one From, usually) and a random MIME body."""
    fields = draw(st.lists(st.tuples(_field_name, _nasty_text), max_size=6))
    if draw(st.integers(0, 9)):           # From, usually first (a bad field ends the header)
        where = draw(st.sampled_from([0, 0, 0, len(fields)]))
        fields.insert(where, (b"From", draw(_from_value)))
    content_type, body = draw(mime_body())
    if draw(st.integers(0, 3)):
        fields.insert(min(1, len(fields)), (b"Content-Type", b" " + content_type))
    folds = draw(st.integers(0, 3))
    if folds and fields:                  # a huge folded field
        name, value = fields[-1]
        fields[-1] = (name, value + b"\r\n " * draw(st.integers(1, 3000)) + b"end")
    head = b"".join(name + b":" + value + draw(_line_end) for name, value in fields)
    data = head + draw(_line_end) + body
    if draw(st.booleans()):               # the same text with other line ends
        data = data.replace(b"\r\n", draw(_line_end))
    return data


def parse_or_refuse(data: bytes) -> content.Parsed | None:
    """The parsed message, or None when relay refused it with one of its From replies."""
    try:
        return content.parse(data)
    except PolicyError as exc:
        assert exc.reply in FROM_REPLIES, exc.reply
        return None


def assert_crlf_only(data: bytes) -> None:
    """No bare CR, no bare LF: nothing a downstream server could end DATA on early."""
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"), data[:200]


def check_message(data: bytes) -> None:
    parsed = parse_or_refuse(data)
    if parsed is None:
        return
    assert parsed.from_address.isprintable() and "@" in parsed.from_address
    content.add_missing(parsed, "01TESTQUEUEID", NOW)
    trace = content.received("app.test\r\n.\r\n", "127.0.0.1", "relay.test", "ESMTP",
                             "01TESTQUEUEID", ["a@example.net"], NOW)
    out = parsed.serialize(prepend=[trace])
    assert_crlf_only(out)
    assert len(out) <= 2 * len(data) + len(trace) + 300    # line-end repair and Date/Message-ID
    again = content.parse(out[len(trace):])                # what the next hop parses
    assert (again.headers, again.body, again.from_address) == \
        (parsed.headers, parsed.body, parsed.from_address)


@budget(300)
@given(data=st.one_of(message(), st.binary(max_size=2000)))
def test_parse_refuses_with_a_reply_or_serializes_crlf_only(data):
    """parse -> add_missing -> serialize: a 550 5.6.0 or CRLF-only bytes that parse back."""
    check_message(data)


@budget(150)
@given(data=message())
def test_line_length_reencoding_never_raises_and_leaves_crlf_only(data):
    """shorten never raises; when it says it changed the body, no line is over 998; what is
    serialized afterwards still has CRLF line ends only."""
    parsed = parse_or_refuse(data)
    if parsed is None:
        return
    body = parsed.body
    if line_length.shorten(parsed):
        assert not line_length.too_long(parsed.body)
    else:
        assert parsed.body == body
    assert_crlf_only(parsed.serialize())


@budget(60)
@given(data=message())
def test_memory_stays_proportional_to_the_message(data):
    """Peak memory of parse + add_missing + serialize + shorten: a small multiple of the
    message's size (plus a fixed allowance for the email package's objects)."""
    tracemalloc.start()
    try:
        parsed = parse_or_refuse(data)
        if parsed is not None:
            content.add_missing(parsed, "01TESTQUEUEID", NOW)
            parsed.serialize()
            line_length.shorten(parsed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 40 * len(data) + 2_000_000, (peak, len(data))


# --- extremes, and regressions found by the fuzzing above --------------------------------

def _peak(function, *args):
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_field_folded_a_hundred_thousand_times_is_split_in_linear_memory():
    """A Subject folded 100 000 times: read whole, in memory proportional to it."""
    data = b"From: billing@acme.fr\r\nSubject: x\r\n" + b" y\r\n" * 100_000 + b"\r\nbody\r\n"
    parsed, peak = _peak(content.parse, data)
    assert parsed.get(b"Subject")[0] == b" x" + b"\r\n y" * 100_000
    assert peak <= 4 * len(data) + 1_000_000, peak


def test_a_field_folded_half_a_million_times_is_split_in_one_pass():
    """Regression: each continuation line copied the whole field so far, quadratic in the
    field's length, on the event loop: this 2 MB Subject took a minute (a 25 MB one, the
    default size limit, about three hours). Sliced once its last line is known: 0.2 s. The
    test asserts no time; on a quadratic split it would simply not finish in CI."""
    data = b"From: billing@acme.fr\r\nSubject: x\r\n" + b" y\r\n" * 500_000 + b"\r\nbody\r\n"
    assert len(content.parse(data).get(b"Subject")[0]) == 2 + 4 * 500_000


def test_from_with_comments_nested_too_deep_is_refused_550():
    """Regression: a From of 10000 nested comments made `email.utils.getaddresses` raise
    RecursionError, which the session turned into 451 4.3.0 (an internal error, retried
    forever). It is the client's bad From: 550 5.6.0."""
    for data in (b"From: " + b"(" * 10_000 + b"billing@acme.fr" + b")" * 10_000 + b"\r\n\r\nx\r\n",
                 b"From: billing@acme.fr " + b"(" * 10_000 + b"\r\n\r\nx\r\n"):
        try:
            content.parse(data)
        except PolicyError as exc:
            assert exc.reply == replies.R550_BAD_FROM
        else:
            raise AssertionError("a From nested 10000 deep was accepted")


def nested_multiparts(depth: int) -> bytes:
    """`depth` nested multiparts around a text part with a 2000-character line."""
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(1, depth))
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(1, depth)))
    return (b'From: billing@acme.fr\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
            b"--b0\r\n" + opening + b"Content-Type: text/plain\r\n\r\n" + b"x" * 2000 + b"\r\n"
            + closing + b"--b0--\r\n")


def test_a_thousand_nested_multiparts_are_left_as_they_are():
    """1000 nested multiparts around a long line: `email` cannot take them apart (its parser
    recurses), so the body is left byte for byte and nothing raises. (Not under tracemalloc:
    it makes the RecursionError's unwinding a hundred times slower.)"""
    parsed = content.parse(nested_multiparts(1000))
    body = parsed.body
    assert line_length.shorten(parsed) is False and parsed.body == body


def test_two_hundred_nested_multiparts_are_reencoded_in_bounded_memory():
    """200 nested multiparts do parse: the long line is re-encoded, in memory proportional
    to the message."""
    data = nested_multiparts(200)
    parsed = content.parse(data)
    changed, peak = _peak(line_length.shorten, parsed)
    assert changed is True and not line_length.too_long(parsed.body)
    assert_crlf_only(parsed.serialize())
    assert peak <= 40 * len(data) + 2_000_000, peak

"""Fuzzing whole SMTP sessions against a running relay, over real sockets.

Random sessions, on the plain `local` listener, the STARTTLS `submission` listener before
STARTTLS and the implicit-TLS `submissions` listener (where AUTH is offered): known verbs
with random arguments (long lines past 64 KiB, NULs, invalid UTF-8, bare CR, addresses with
random parameters), many recipients, huge AUTH blobs and AUTH LOGIN dialogues, DATA blocks
of random bytes, and raw garbage, sent in one write or in random pieces. For every session:

- everything relay writes is well-formed SMTP (RFC 5321 §4.2): complete CRLF lines
  `<code><SP or -><text>`, codes 2xx-5xx, text printable UTF-8 (RFC 6531) without control
  characters; the lines of a multi-line reply share its code; every 4xx/5xx but the answers
  to HELO and EHLO carries an RFC 3463 enhanced code of its own class (RFC 2034 §3);
- relay never fails on its own: no ERROR is logged (an unexpected exception, which the one
  edge turns into `451 4.3.0`), no exception text reaches the client, and no aiosmtpd
  `500 Error: (SomeException)` leaks through;
- a session opened before the fuzzing is still answered after every hostile one, and a new
  one is greeted and answered; at the end an ordinary message still goes through, end to end.

Budgets: 300 sessions on the plain listeners, 80 over implicit TLS, 100 pipelined garbage.
AUTH failure slowing and mass-send detection are switched off here (thresholds very high):
the fuzzer fails AUTH and sends one campaign hundreds of times from 127.0.0.1, which would
otherwise slow every session or refuse every message; both are tested on their own.
"""
from __future__ import annotations

import base64
import logging
import re
import socket
import ssl

import pytest
from hypothesis import given, strategies as st

from tests.conftest import message, submit
from tests.fuzz import budget

REPLY_LINE = re.compile(rb"^([2-5]\d\d)([ -])(.*)$", re.DOTALL)
ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}(?: |$)")
TERMINATOR = b"\r\n.\r\nQUIT\r\n"     # ends DATA, an AUTH dialogue or a command line, then quits
HELLO_REPLY = re.compile(r"^Syntax: (HELO|EHLO) hostname$")   # RFC 2034 §3: no enhanced code
LEAKS = (b"Error: (", b"Traceback", b"Exception", b"Error:(")

VERBS = [b"HELO", b"EHLO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"RSET", b"NOOP", b"VRFY",
         b"EXPN", b"HELP", b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"STARTTLS",
         b"BDAT", b"XCLIENT", b"ETRN", b"TURN", b"mail from:", b"rcpt to:", b"Ehlo", b"QUIT"]
ADDRESSES = [b"<billing@acme.fr>", b"<client@example.net>", b"<>", b"billing@acme.fr", b"<a@b@c>",
             b"<\xff\xfe@acme.fr>", "<élodie@acme.fr>".encode(), b"<billing@acme.fr", b"<@x:a@b.c>",
             b"<\"quoted local\"@example.net>", b"<a\x00b@example.net>", b"<" + b"a" * 300 + b"@x.fr>",
             b"<news@other.fr>", b"<billing@ACME.FR>", b"<postmaster>", b"<x@[127.0.0.1]>",
             b"<billing\xc3(@acme.fr>", b"<client@ex\xffample.net>"]
PARAMETERS = [b"", b" SIZE=10", b" SIZE=99999999999", b" SIZE=x", b" BODY=8BITMIME",
              b" BODY=BINARYMIME", b" SMTPUTF8", b" NOTIFY=SUCCESS", b" RET=HDRS", b" ENVID=\x00",
              b" =", b" FOO=" + b"b" * 600, b" AUTH=<>", b"\t SIZE=1"]


def _no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b"")


_argument = st.one_of(
    st.binary(max_size=60).map(_no_newline),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")).map(_no_newline),
    st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(PARAMETERS)).map(b"".join),
    st.integers(400, 70_000).map(lambda n: b"x" * n),           # past 512 and past 64 KiB
    st.integers(1, 2000).map(lambda n: b"\x00" * n),
    st.sampled_from([b"\xff\xfe\xfd", b"\xc3(", b"\xed\xa0\x80", b"\r", b"a\rb", b"*", b"="]),
)
_line_end = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\r\n"])


@st.composite
def command(draw) -> bytes:
    verb = draw(st.sampled_from(VERBS))
    if draw(st.booleans()):
        verb += draw(st.sampled_from([b" ", b"", b"  ", b"\t"])) + draw(_argument)
    return verb + draw(_line_end)


@st.composite
def auth_dialogue(draw) -> bytes:
    """AUTH with an initial response (huge, random, or three NUL-separated parts) or a
    LOGIN/PLAIN dialogue answered with random lines."""
    blob = draw(st.one_of(st.binary(max_size=200),
                          st.integers(1000, 60_000).map(lambda n: b"\x00" * 3 + b"A" * n),
                          st.sampled_from([b"\x00billing-app\x00wrong", b"x\x00billing-app\x00y",
                                           b"\xff\x00\xfe\x00\xfd", b"\x00\x00"])))
    encoded = base64.b64encode(blob) if draw(st.booleans()) else blob.replace(b"\n", b"")
    if draw(st.booleans()):
        return b"AUTH PLAIN " + encoded + b"\r\n"
    answers = draw(st.lists(st.sampled_from([encoded, b"*", b"", b"=", b"!!!", b"dXNlcg=="]),
                            max_size=3))
    return draw(st.sampled_from([b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n"])) + b"".join(
        a + b"\r\n" for a in answers)


_data_block = st.tuples(
    st.sampled_from([b"DATA\r\n", b"DATA\n", b"DATA x\r\n"]),
    st.one_of(st.binary(max_size=400), st.just(message().encode()),
              st.just(b"From: billing@acme.fr\r\n\r\n" + b"y" * 70_000)),
    st.sampled_from([b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b""]),
).map(b"".join)

_transaction = st.just(b"EHLO app.test\r\nMAIL FROM:<billing@acme.fr>\r\nRCPT TO:<client@example.net>\r\n")
_many_recipients = st.integers(40, 80).map(
    lambda n: b"MAIL FROM:<billing@acme.fr>\r\n" + b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i
                                                           for i in range(n)))



@st.composite
def random_transaction(draw) -> bytes:
    """MAIL and RCPTs with random addresses and parameters, then DATA with a message that
    passes the header checks: what reaches acceptance's deeper steps (spool included)."""
    def address() -> bytes:                  # usually without parameters: to get further
        return draw(st.sampled_from(ADDRESSES)) + draw(st.sampled_from([b""] * 4 + PARAMETERS))
    mail = b"MAIL FROM:" + draw(st.sampled_from(ADDRESSES)) \
        + draw(st.sampled_from([b"", b" SMTPUTF8", b" BODY=8BITMIME SMTPUTF8"]))
    rcpts = [b"RCPT TO:" + address() for _ in range(draw(st.integers(1, 3)))]
    rcpts.append(b"RCPT TO:<client@example.net>")
    return b"\r\n".join([b"EHLO app.test", mail, *rcpts, b"DATA", message().encode() + b"."]) + b"\r\n"


_step = st.one_of(command(), command(), command(), auth_dialogue(), _data_block, _transaction,
                  _many_recipients, random_transaction(), random_transaction())


@st.composite
def session(draw) -> tuple[bytes, list[int]]:
    """The bytes of one session (always ending with TERMINATOR) and where to cut them into
    separate writes (none: one write)."""
    data = b"".join(draw(st.lists(_step, min_size=1, max_size=10))) + TERMINATOR
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


class ErrorLog(logging.Handler):
    """Every ERROR (or worse) any logger emits while installed: an unexpected exception
    (reply_for's "unexpected error", aiosmtpd's, asyncio's "never retrieved")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "ErrorLog":
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)

    def take(self) -> list[str]:
        found = [f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "")
                 for r in self.records]
        self.records.clear()
        return found


@pytest.fixture
def relay(make_relay):
    return make_relay(**{"server.auth_failures": {"slow_after": 1_000_000, "lock_after": 1_000_000},
                         "server.max_recipients": 50,
                         "limits": {"bulk": {"recipients_threshold": 1_000_000}}})


def connect(relay, listener: str, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port(listener)), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="localhost") if context else sock


def run_session(sock: socket.socket, data: bytes, cuts: list[int]) -> tuple[bytes, bool]:
    """Send `data` in the pieces `cuts` makes, then read to the end; (what relay wrote,
    whether the connection was reset, which may cut the last line)."""
    reset = False
    try:
        for start, end in zip([0] + cuts, cuts + [len(data)]):
            if end > start:
                sock.sendall(data[start:end])
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        reset = True                      # relay hung up (502 after bogus commands, 421)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError):
        reset = True
    except socket.timeout:
        raise AssertionError(f"relay neither answered QUIT nor closed; it wrote {bytes(received)[-300:]!r}")
    finally:
        sock.close()
    return bytes(received), reset


def check_replies(received: bytes, reset: bool) -> None:
    """Well-formed SMTP replies, as the module docstring says."""
    lines = received.split(b"\r\n")
    if lines[-1] and reset:
        lines.pop()                       # a line cut by the reset
    assert lines[-1] == b"", f"relay wrote a line without CRLF: {lines[-1][:200]!r}"
    lines.pop()
    assert lines and lines[0].startswith(b"220"), lines[:1]
    continuing = None
    for line in lines:
        match = REPLY_LINE.match(line)
        assert match, f"not an SMTP reply line: {line[:200]!r}"
        code, separator, text = match.groups()
        assert continuing in (None, code), f"a multi-line reply changed code: {line[:200]!r}"
        continuing = code if separator == b"-" else None
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise AssertionError(f"reply text is not UTF-8: {line[:200]!r}") from None
        assert decoded.replace("\t", " ").isprintable(), f"control character in a reply: {line[:200]!r}"
        assert not any(leak in text for leak in LEAKS), f"exception text in a reply: {line[:200]!r}"
        if code[:1] in b"45" and not HELLO_REPLY.match(decoded):
            enhanced = ENHANCED.match(decoded)
            assert enhanced and enhanced.group(1) == code[:1].decode(), \
                f"a {code.decode()} without an enhanced code of its class: {line[:200]!r}"


def still_serving(relay) -> None:
    """A new session is greeted and answered."""
    with socket.create_connection(("127.0.0.1", relay.port("local")), timeout=10) as sock:
        file = sock.makefile("rb")
        assert file.readline().startswith(b"220 ")
        sock.sendall(b"NOOP\r\nQUIT\r\n")
        assert file.readline().startswith(b"250 ")
        assert file.readline().startswith(b"221 ")


def fuzz_sessions(relay, sessions, listeners: list[str], examples: int,
                  context: ssl.SSLContext | None = None) -> None:
    """Run `examples` sessions drawn from `sessions`, each checked as the docstring says,
    while a bystander session stays open and is answered after each of them."""
    errors = ErrorLog()
    bystander = socket.create_connection(("127.0.0.1", relay.port("local")), timeout=10)
    replies = bystander.makefile("rb")
    assert replies.readline().startswith(b"220 ")

    @budget(examples)
    @given(case=sessions, listener=st.sampled_from(listeners))
    def one(case, listener):
        data, cuts = case
        if listener == "submission":          # a 220 to STARTTLS waits for a TLS handshake
            data = re.sub(rb"(?i)starttls", b"NOOP", data)
        received, reset = run_session(connect(relay, listener, context), data, cuts)
        check_replies(received, reset)
        assert errors.take() == [], (listener, data[:300])
        still_serving(relay)
        bystander.sendall(b"NOOP\r\n")
        assert replies.readline() == b"250 2.0.0 OK\r\n"

    try:
        with errors:
            one()
    finally:
        bystander.close()


def test_random_sessions_on_the_plain_listeners(relay, upstream):
    """Random sessions on `local` (no TLS) and `submission` (STARTTLS, not started)."""
    fuzz_sessions(relay, session(), ["local", "local", "submission"], 300)
    assert submit(relay.port("local"), "billing@acme.fr", ["marker@example.net"],
                  message(to="marker@example.net")) == {}
    upstream.wait_for(lambda msgs: any("marker@example.net" in m.rcpt_tos for m in msgs),
                      what="the marker message")


def test_random_sessions_over_implicit_tls_with_auth(relay, upstream, client_tls):
    """Random sessions on `submissions` (TLS from the first byte): AUTH is offered there."""
    fuzz_sessions(relay, session(), ["submissions"], 80, client_tls)


_garbage = st.lists(st.one_of(st.binary(min_size=1, max_size=300), command(), _data_block),
                    min_size=1, max_size=20).map(b"".join)


def test_pipelined_garbage_in_one_write(relay, upstream):
    """Random bytes and commands, all in one write, then the terminator."""
    fuzz_sessions(relay, _garbage.map(lambda g: (g + TERMINATOR, [])), ["local"], 100)


def test_commands_pipelined_after_starttls_are_discarded(relay, client_tls):
    """Plain-text commands sent in the same write as STARTTLS are dropped, never run as if
    they came over TLS (STARTTLS command injection, CVE-2011-0411, CVE-2024-34083)."""
    with socket.create_connection(("127.0.0.1", relay.port("submission")), timeout=10) as sock:
        file = sock.makefile("rb")
        assert file.readline().startswith(b"220 ")
        sock.sendall(b"EHLO app.test\r\n")
        while not file.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@acme.fr>\r\nRSET\r\n")
        assert file.readline().startswith(b"220 ")
        with client_tls.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"NOOP\r\nQUIT\r\n")
            received = b""
            while chunk := tls.recv(4096):
                received += chunk
    assert received == b"250 2.0.0 OK\r\n221 2.0.0 Bye\r\n", received


# --- regressions found by the fuzzing above ----------------------------------------------------

def exchange(relay, data: bytes, listener: str = "local", context=None) -> list[bytes]:
    """The reply lines to `data` (EHLO's own lines dropped), with no ERROR logged."""
    with ErrorLog() as errors:
        received, reset = run_session(connect(relay, listener, context), data, [])
        check_replies(received, reset)
        assert errors.take() == []
    return [line for line in received.split(b"\r\n")[1:] if line and line[3:4] != b"-"][1:]


def test_control_characters_a_reply_repeats_become_question_marks(relay):
    """Regression: `500 Error: command "\\x00" not recognized` (and ESC, DEL, a bare CR inside
    a command name) reached the client as they came: control characters in a reply."""
    replies = exchange(relay, b"EHLO app.test\r\n\x00\x1b[2J\r\nA\rB\r\nQUIT\r\n")
    assert replies == [b'500 5.5.2 Error: command "??[2J" not recognized',
                       b'500 5.5.2 Error: command "A?B" not recognized', b"221 2.0.0 Bye"]


@pytest.mark.parametrize("mail, rcpt", [
    (b"MAIL FROM:<\xff\xfe@acme.fr> SMTPUTF8", None),
    (b"MAIL FROM:<billing@acme.fr> SMTPUTF8", b"RCPT TO:<\xff@example.net>"),
    (b"MAIL FROM:<billing\xc3(@acme.fr> SMTPUTF8", None),
])
def test_an_address_that_is_not_utf8_is_malformed(relay, upstream, mail, rcpt):
    """Regression: with SMTPUTF8, MAIL FROM:<\\xff\\xfe@acme.fr> was accepted and the message
    then refused 451 at every try (the spool cannot store it), and RCPT TO:<\\xff@...> was a
    451 internal error. Both are malformed addresses: 553 5.1.3, and the session goes on."""
    commands = [b"EHLO app.test", mail] + ([rcpt] if rcpt else []) + [b"QUIT"]
    replies = exchange(relay, b"\r\n".join(commands) + b"\r\n")
    assert replies[-2][:9] == b"553 5.1.3", replies
    assert replies[-1] == b"221 2.0.0 Bye"


def test_nothing_runs_after_goodbye_over_tls(relay, upstream, client_tls):
    """Regression: after `502 5.5.1 Too many unrecognized commands, goodbye.` on a TLS
    session, the commands pipelined behind still ran, and their replies, written to the
    closing TLS transport, raised (a 451 and an ERROR). Now they are not run at all."""
    transaction = (b"MAIL FROM:<billing@acme.fr>\r\nRCPT TO:<after-goodbye@example.net>\r\nDATA\r\n"
                   + message(to="after-goodbye@example.net").encode() + b".\r\n")
    for _ in range(3):                    # the old failure depended on timing
        replies = exchange(relay, b"EHLO app.test\r\n" + b"BOGUS\r\n" * 5 + transaction + b"QUIT\r\n",
                           "submissions", client_tls)
        assert replies[-1] == b"502 5.5.1 Too many unrecognized commands, goodbye."
    assert relay.relay.spool.summaries() == []
    assert "after-goodbye@example.net" not in upstream.rcpt_attempts

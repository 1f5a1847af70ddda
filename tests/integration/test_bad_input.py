"""Bad input gets a clear reply and loses nothing.

Malformed addresses, garbage and overlong commands, messages without a usable From, too
big or with too many recipients are refused with a reply naming the problem; 8-bit
headers, UTF-8 addresses, bare-LF line endings and pipelined commands are accepted and
delivered intact; a client vanishing mid-DATA leaves nothing behind; an internal failure
is a 451 that reveals nothing of the exception. After each, the relay keeps serving.

The `local` listener (no TLS; 127.0.0.1 is the network user erp, senders acme.fr) is used
throughout. Raw sockets are used where smtplib would fix the input or refuse to send it.
"""
from __future__ import annotations

import asyncio
import smtplib
import socket
import sys
import threading
import time

import dkim
import pytest

from tests.conftest import message, submit, wait_until

CRLF = b"\r\n"


class RawClient:
    """An SMTP client over a plain socket that sends exactly the bytes it is given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply()

    def reply(self) -> tuple[int, bytes]:
        """One (possibly multi-line) reply: its code and the text of every line."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError(f"connection closed; read so far: {lines!r}")
            lines.append(line[4:].rstrip(CRLF))
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: bytes) -> tuple[int, bytes]:
        self.send(line + CRLF)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _deliver_marker(relay, upstream, to: str = "marker@example.net") -> None:
    """The relay still serves: an ordinary message goes through, end to end."""
    assert submit(relay.port("local"), "billing@acme.fr", [to], message(to=to)) == {}
    upstream.wait_for(lambda msgs: any(to in m.rcpt_tos for m in msgs), what=f"the message to {to}")


def _rcpts_delivered(upstream) -> list[list[str]]:
    with upstream.lock:
        return [m.rcpt_tos for m in upstream.messages]


# --- addresses and commands -------------------------------------------------------------

@pytest.mark.parametrize("command", [
    b"RCPT TO:<client@>",
    b"RCPT TO:<@example.net>",
    b"RCPT TO:<client@example.net@example.org>",
    b"RCPT TO:<client>",                      # no domain
    b"RCPT TO:",
    b"RCPT client@example.net",
])
def test_malformed_recipient_gets_a_syntax_reply(make_relay, upstream, command):
    """A recipient that is not an address is refused with 553 5.1.3 or 501, and the
    transaction goes on with the valid ones."""
    relay = make_relay()
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        code, text = client.cmd(command)
        assert code in (501, 553), (code, text)
        if code == 553:
            assert text.startswith(b"5.1.3")
        assert client.cmd(b"RCPT TO:<valid@example.net>")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.send(message(to="valid@example.net").encode() + b".\r\n")
        assert client.reply()[0] == 250
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message to the valid recipient")
    assert received.rcpt_tos == ["valid@example.net"]


@pytest.mark.parametrize("command", [b"MAIL FROM:", b"MAIL billing@acme.fr", b"MAIL FROM:<@acme.fr>",
                                     b"MAIL FROM:<billing@acme.fr> <extra>"])
def test_malformed_sender_gets_a_syntax_reply(make_relay, command):
    """A MAIL command whose address cannot be parsed gets 553 5.1.3 or 501; then a
    correct MAIL FROM is accepted in the same session."""
    relay = make_relay()
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        code, text = client.cmd(command)
        assert code in (501, 553), (code, text)
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250


def test_garbage_and_overlong_commands_get_500_and_the_session_goes_on(make_relay, upstream):
    """Unknown commands, an empty line, non-ASCII bytes and a command line over 512 octets
    (RFC 5321 §4.5.3.1.4) each get a 500; the session then sends a message normally."""
    relay = make_relay()
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        for garbage in (b"FOO bar", b"", b"\xff\xfe\x00", b"NOOP " + b"x" * 600):
            code, _ = client.cmd(garbage)
            assert code == 500, garbage[:20]
        assert client.cmd(b"MAIL FROM:<billing@acme.fr> " + b"X" * 1000)[0] == 500
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        assert client.cmd(b"RCPT TO:<client@example.net>")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.send(message().encode() + b".\r\n")
        assert client.reply()[0] == 250
    upstream.wait_for(lambda msgs: msgs, what="the message after the garbage")


def test_pipelined_commands_are_answered_in_order(make_relay, upstream):
    """MAIL, RCPTs and DATA sent in one write get one reply each, in order (RFC 2920),
    a refused recipient included; the message goes to the accepted ones."""
    relay = make_relay(**{"server.max_recipients": 2})
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        client.send(b"MAIL FROM:<billing@acme.fr>\r\nRCPT TO:<a@example.net>\r\n"
                    b"RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
        codes = [client.reply()[0] for _ in range(5)]
        assert codes == [250, 250, 250, 452, 354]
        client.send(message(to="a@example.net").encode() + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 221]
    [received] = upstream.wait_for(lambda msgs: msgs, what="the pipelined message")
    assert received.rcpt_tos == ["a@example.net", "b@example.net"]


def test_too_many_recipients_get_452_and_the_rest_is_delivered(make_relay, upstream):
    """Past `server.max_recipients`, RCPT gets 452 4.5.3 (the client sends those later);
    the accepted recipients get the message."""
    relay = make_relay(**{"server.max_recipients": 3})
    rcpts = [f"r{i}@example.net" for i in range(5)]
    refused = submit(relay.port("local"), "billing@acme.fr", rcpts, message(to="r0@example.net"))
    assert set(refused) == set(rcpts[3:])
    assert all(code == 452 and text.startswith(b"4.5.3") for code, text in refused.values())
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message")
    assert received.rcpt_tos == rcpts[:3]


# --- content -----------------------------------------------------------------------

@pytest.mark.parametrize("headers, what", [
    (b"To: client@example.net\r\nSubject: no sender\r\n", "no From"),
    (b"From: billing@acme.fr\r\nFrom: sales@acme.fr\r\nTo: client@example.net\r\n", "two From"),
])
def test_message_without_exactly_one_from_is_refused(make_relay, upstream, headers, what):
    """A message needs exactly one From (RFC 5322 §3.6): none, or two, get 550 5.6.0."""
    relay = make_relay()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], headers + b"\r\nbody\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.6.0"), what
    _deliver_marker(relay, upstream)
    assert _rcpts_delivered(upstream) == [["marker@example.net"]]


def test_8bit_headers_pass_through_untouched(make_relay, upstream, dkim_dns):
    """Raw UTF-8 in header fields (what many applications send) is delivered byte for byte,
    and signed so that it verifies."""
    relay = make_relay()
    subject = "Facture n°42 – échéance 30 jours".encode()
    sender = "Société Acmé <billing@acme.fr>".encode()
    data = (b"From: " + sender + b"\r\nTo: client@example.net\r\nSubject: " + subject
            + "\r\n\r\nCorps en UTF-8 : déjà réglé.\r\n".encode())
    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        assert client.sendmail("billing@acme.fr", ["client@example.net"], data,
                               mail_options=["BODY=8BITMIME"]) == {}
    [received] = upstream.wait_for(lambda msgs: msgs, what="the 8-bit message")
    assert b"Subject: " + subject + b"\r\n" in received.data
    assert b"From: " + sender + b"\r\n" in received.data
    assert "déjà réglé".encode() in received.data
    assert all(dkim.DKIM(received.data).verify(idx=i, dnsfunc=dkim_dns) for i in range(2))


def test_smtputf8_addresses_are_accepted_and_delivered(make_relay, upstream):
    """With the SMTPUTF8 option (RFC 6531), UTF-8 local parts in MAIL FROM and RCPT TO are
    accepted and reach the provider as they were written."""
    relay = make_relay()
    sender, rcpt = "élodie.facturation@acme.fr", "josé.müller@example.net"
    data = f"From: Élodie <{sender}>\r\nTo: <{rcpt}>\r\nSubject: Reçu\r\n\r\nMerci.\r\n".encode()
    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        assert client.has_extn("smtputf8")
        assert client.sendmail(sender, [rcpt], data, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    wait_until(lambda: relay.relay.spool.summaries() == [], what="the message to leave the spool")
    delivered = upstream.delivered_to(rcpt)
    assert delivered, "the message left the spool without reaching the provider (bounced?)"
    [received] = delivered
    assert received.mail_from == sender
    assert f"From: Élodie <{sender}>".encode() in received.data


def test_oversized_message_is_refused_with_552(make_relay, upstream):
    """EHLO advertises SIZE (RFC 1870); a declared SIZE over it is refused at MAIL and an
    undeclared one at the end of DATA, both 552 5.3.4; the session then goes on."""
    limit = 10 * 1024
    relay = make_relay(**{"server.max_message_size": "10KB"})
    big = message(body=("x" * 70 + "\r\n") * 200)
    assert len(big) > limit
    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        assert client.esmtp_features["size"] == str(limit)
        code, text = client.mail("billing@acme.fr", options=[f"SIZE={len(big)}"])
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.mail("billing@acme.fr")[0] == 250
        assert client.rcpt("client@example.net")[0] == 250
        code, text = client.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert client.rset()[0] == 250
    _deliver_marker(relay, upstream)
    assert _rcpts_delivered(upstream) == [["marker@example.net"]]


def test_bare_lf_line_endings_are_repaired_and_signed(make_relay, upstream, dkim_dns):
    """A message written with bare LF line endings is delivered with CRLF everywhere
    (RFC 5322 §2.3), and its DKIM signatures verify on what the provider receives."""
    relay = make_relay()
    body = b"From: billing@acme.fr\nTo: client@example.net\nSubject: Unix\n\nline one\nline two\n"
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        assert client.cmd(b"RCPT TO:<client@example.net>")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.send(body + b"\r\n.\r\n")
        assert client.reply()[0] == 250
    [received] = upstream.wait_for(lambda msgs: msgs, what="the bare-LF message")
    assert received.data.count(b"\n") == received.data.count(b"\r\n")
    assert b"Subject: Unix\r\n" in received.data
    assert b"\r\n\r\nline one\r\nline two\r\n" in received.data
    assert all(dkim.DKIM(received.data).verify(idx=i, dnsfunc=dkim_dns) for i in range(2))


def test_client_disconnecting_mid_data_leaves_nothing_behind(make_relay, upstream):
    """A client that drops the connection in the middle of DATA never got a 250: nothing
    is queued or delivered, and the relay goes on serving."""
    relay = make_relay()
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        assert client.cmd(b"RCPT TO:<lost@example.net>")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.send(message(to="lost@example.net").encode()[:60])
    wait_until(lambda: relay.relay.listeners.sessions == set(), what="the session to end")
    _deliver_marker(relay, upstream)
    assert _rcpts_delivered(upstream) == [["marker@example.net"]]
    wait_until(lambda: relay.relay.spool.summaries() == [], what="an empty spool")


# --- internal errors ------------------------------------------------------------------

class ExplodingClock:
    """A real clock that, once armed, raises when a given relay module asks for the time:
    an unexpected internal error at a known point, injected rather than patched."""

    SECRET = "boom at /var/lib/relay/secret.db password=hunter2"

    def __init__(self) -> None:
        self.armed_for: str | None = None
        self._lock = threading.Lock()

    def arm(self, module: str | None) -> None:
        with self._lock:
            self.armed_for = module

    def now(self) -> float:
        with self._lock:
            armed = self.armed_for
        if armed and sys._getframe(1).f_globals.get("__name__") == armed:
            raise RuntimeError(self.SECRET)
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _leaks(text: bytes) -> bool:
    return any(word in text for word in (b"RuntimeError", b"hunter2", b"secret", b"Traceback"))


def test_internal_errors_are_451_without_exception_text(make_relay, upstream, client_tls):
    """An unexpected exception during DATA or AUTH is answered 451 4.3.0 with a reference,
    never with the exception's class or text; nothing is queued, and the relay goes on."""
    clock = ExplodingClock()
    relay = make_relay(clock=clock)

    clock.arm("relay.inbound.acceptance")
    with pytest.raises(smtplib.SMTPDataError) as failed:
        submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message())
    assert (failed.value.smtp_code, failed.value.smtp_error[:5]) == (451, b"4.3.0")
    assert not _leaks(failed.value.smtp_error), failed.value.smtp_error

    clock.arm("relay.checks.auth")
    with smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=client_tls, timeout=10) as client:
        client.ehlo("app.test")
        code, text = client.docmd("AUTH", "PLAIN AGJpbGxpbmctYXBwAHdyb25n")
        assert (code, text[:5]) == (451, b"4.3.0")
        assert not _leaks(text), text

    clock.arm(None)
    assert relay.relay.spool.summaries() == []
    _deliver_marker(relay, upstream)
    assert _rcpts_delivered(upstream) == [["marker@example.net"]]

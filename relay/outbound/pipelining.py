"""One mail transaction to a route that offers PIPELINING (RFC 2920), in two round trips.

MAIL, every RCPT and DATA leave in one write; their replies are read in order; then the
message and its final dot, and that reply. Without pipelining each command waits for its
reply: with aiosmtplib's command machinery, four round trips and ~430 us of the delivery
process's CPU for a 10 KB message to smtp-sink here, against two and ~150 us this way
(bench/README.md). Providers' submission servers commonly offer PIPELINING; a route that does not
gets the one-command-at-a-time path (`upstream.SmtpSession._transaction`).

While the transaction runs, `Replies` is the connection's protocol (`set_protocol`), since
aiosmtplib's keeps one reply and drops what arrives behind it; aiosmtplib's is put back after,
and told if the connection was lost meanwhile.

The replies mean what they mean one at a time (see `upstream.py`): MAIL refused: every
recipient gets its reply; a RCPT refused: that recipient; a 421 anywhere: the recipients not
refused yet get it, nothing more is read, and the session is closed; DATA refused or the
message refused: the accepted recipients get that reply. A server that answers DATA with 354
although it accepted no recipient (RFC 2920 §3.1 says it must refuse it) gets an empty
message, a lone dot, and no recipient counts it as sent. RSET follows a failed transaction
(never a 421), so the session can carry the next one.
"""
from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import Callable

import aiosmtplib
from aiosmtplib.email import quote_address

_CLOSING = 421
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")          # as aiosmtplib refuses in a command
_MAX_REPLY = 64 * 1024               # bytes of one reply, its continuation lines included


class Replies(asyncio.Protocol):
    """The connection's replies while a pipelined transaction runs, each (code, text) with
    multi-line text joined by newlines, as aiosmtplib gives it."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._ready: deque[aiosmtplib.SMTPResponse] = deque()
        self._waiter: asyncio.Future | None = None
        self.error: Exception | None = None
        self.lost = False
        self.lost_with: Exception | None = None
        self._original: asyncio.BaseProtocol | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self.error is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _MAX_REPLY:
                    self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
                break
            line = bytes(self._buffer[:end + 1])
            del self._buffer[:end + 1]
            self._line(line)
        self._wake()

    def _line(self, line: bytes) -> None:
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", "replace").strip()
            self._fail(aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response line: {text}"))
            return
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if sum(map(len, self._lines)) > _MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        elif line[3:4] != b"-":
            text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
            self._ready.append(aiosmtplib.SMTPResponse(code, text))
            self._lines = []

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        self._wake()
        return False                                   # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self._original is not None:    # handed back already (uvloop's TLS calls late)
            self._original.connection_lost(exc)
            return
        self.lost, self.lost_with = True, exc
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        self._wake()

    def handed_back(self, original: asyncio.BaseProtocol) -> None:
        """aiosmtplib's protocol is the connection's again: it learns of a loss that came
        while this one was in place, and gets any that comes later."""
        self._original = original
        if self.lost:
            original.connection_lost(self.lost_with)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done() and (self._ready or self.error):
            self._waiter.set_result(None)

    async def next(self, timeout: float) -> aiosmtplib.SMTPResponse:
        """The next reply, in order; raises when the connection failed before it came."""
        while not self._ready:
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except asyncio.TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        return self._ready.popleft()


def crlf_clean(body: bytes) -> bool:
    """Every CR and LF in a CRLF pair: the message can go as stored (`dot_stuffed`)."""
    return body.count(b"\n") == body.count(b"\r") == body.count(b"\r\n")


def dot_stuffed(body: bytes) -> bytes:
    """A CRLF-clean message as DATA carries it, before its final dot: ending in CRLF, each
    line starting with "." given one more (RFC 5321 §4.5.2), in one C-level replace."""
    stuffed = (body if body.endswith(b"\r\n") else body + b"\r\n").replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def usable(smtp: aiosmtplib.SMTP, body: bytes) -> bool:
    """PIPELINING offered, the body CRLF-clean (it is sent as stored, dot-stuffed in one
    pass), and aiosmtplib's connection the shape this module knows."""
    protocol = smtp.protocol
    return (smtp.supports_extension("pipelining") and crlf_clean(body)
            and protocol is not None and getattr(protocol, "transport", None) is not None
            and getattr(protocol, "_command_lock", None) is not None)


def command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """`MAIL FROM:<a> OPTS` or `RCPT TO:<a>`, as aiosmtplib writes them; UnicodeEncodeError
    for an address the session cannot carry (UTF-8 without SMTPUTF8)."""
    line = verb + quote_address(address).encode(encoding)
    if _CONTROL.search(line):                         # never from relay's own parser
        raise ValueError("an address holds a control character")
    return line + b"".join(b" " + o.encode("ascii") for o in options) + b"\r\n"


@dataclass
class Outcome:
    mail: aiosmtplib.SMTPResponse | None                # MAIL's refusal, when it was refused
    answers: list[aiosmtplib.SMTPResponse]              # one per RCPT line sent
    reset: bool                                         # failed, not closing: RSET before the next


async def transaction(smtp: aiosmtplib.SMTP, mail: bytes, rcpts: list[bytes], body: bytes,
                      command_timeout: float, data_timeout: float,
                      at: Callable[[str], None]) -> Outcome:
    """Send MAIL (`mail`, a command line), the RCPT lines (at least one), DATA and `body`,
    pipelined. `at(stage)` ("MAIL", "RCPT", "DATA") is called as each reply is awaited,
    so a failure can say where it happened. Raises aiosmtplib's errors for a lost
    connection, a timeout or a malformed reply."""
    protocol = smtp.protocol
    transport = protocol.transport
    async with protocol._command_lock:
        original = transport.get_protocol()
        replies = Replies()
        transport.set_protocol(replies)
        try:
            outcome = await _exchange(transport, replies, mail, rcpts, body, command_timeout,
                                      data_timeout, at)
            if any(a.code == _CLOSING for a in outcome.answers):
                _abort(transport)        # the server is closing: no QUIT, no body it waits for
            return outcome
        except BaseException:            # replies may still come: the session cannot go on
            _abort(transport)            # (and a body still buffered must not leave now)
            raise
        finally:
            transport.set_protocol(original)
            replies.handed_back(original)


def _abort(transport: asyncio.BaseTransport) -> None:
    if not transport.is_closing():       # closing twice breaks asyncio's TLS transport
        transport.abort()


async def _exchange(transport: asyncio.WriteTransport, replies: Replies, mail: bytes,
                    rcpts: list[bytes], body: bytes, command_timeout: float,
                    data_timeout: float, at: Callable[[str], None]) -> Outcome:
    transport.write(mail + b"".join(rcpts) + b"DATA\r\n")
    at("MAIL")
    first = await replies.next(command_timeout)
    refused = first if first.code != 250 else None
    if first.code == _CLOSING:
        return Outcome(refused, [first] * len(rcpts), reset=False)
    at("RCPT")
    answers: list[aiosmtplib.SMTPResponse | None] = []
    for _ in rcpts:
        reply = await replies.next(command_timeout)
        if reply.code == _CLOSING:                  # this one and every one not refused yet
            return Outcome(refused, [a or reply for a in answers] + [reply] * (len(rcpts) - len(answers)),
                           reset=False)
        answers.append(None if reply.code in (250, 251) else reply)
    at("DATA")
    start = await replies.next(data_timeout)          # as aiosmtplib's DATA: `timeouts.data`
    if start.code == _CLOSING:
        return Outcome(refused, [a or start for a in answers], reset=False)
    if refused is not None or all(a is not None for a in answers):
        if start.code == 354:                      # DATA taken with no recipient: send nothing
            transport.write(b".\r\n")
            end = await replies.next(data_timeout)
            if end.code == _CLOSING:
                return Outcome(refused, [a or end for a in answers], reset=False)
        return Outcome(refused, [a or start for a in answers], reset=True)
    if start.code != 354:
        return Outcome(None, [a or start for a in answers], reset=True)
    transport.writelines([dot_stuffed(body), b".\r\n"])
    final = await replies.next(data_timeout)
    return Outcome(None, [a or final for a in answers],
                   reset=final.code != 250 and final.code != _CLOSING)

"""Route clients: carrying one message to a route and reporting a reply per recipient.

`SmtpRoute` speaks SMTP to the provider with aiosmtplib (this module and `pipelining.py`,
its transaction in two round trips when the provider offers PIPELINING, are the only ones
that import it): STARTTLS or implicit TLS, AUTH with the password from `password_env`, and
sessions reused across messages (each delivery worker keeps its own). `OutboxRoute` writes each message
as an `.eml` file (fsync + rename), for trying relay without a provider account.

A route answers `send()` with one `UpstreamReply` per recipient. When no reply can be had at
all (connection refused, TLS failure, timeout, disconnect, AUTH refused) it raises
`RouteUnavailable`, which the delivery pipeline treats as a temporary failure of every
recipient: our own or the provider's trouble is never a bounce. Its text names the phase
and the fault ("TLS failed at STARTTLS: ...", "AUTH refused: 535 ...", "no reply within
300s at DATA ..."); it becomes the deferred recipients' reply in the event log, and a
warning in the log.

Faults and what they become (each wait is bounded by the route's `timeouts`):
- connection refused or lost, a timeout, a TLS failure, AUTH refused (even 5xx: relay's
  credentials are the operator's to fix, and the mail waits until `spool.max_age`):
  `RouteUnavailable`, and the session is closed;
- lost or timed out after the message was sent, before the reply to the final dot: the
  same, though the provider may have the message; sending it again risks a duplicate, not
  a loss (RFC 5321 §4.5.3.2.6);
- `421` to any command (RFC 5321 §3.8: the server is closing the channel): the recipients
  not refused yet get that 421 (deferred), and the session is never used again.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from relay.config import Route
from relay import replies, tls
from relay.outbound import pipelining
from relay.replies import Reply

log = logging.getLogger("relay.upstream")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    code: int
    text: str                       # the reply line(s) as the route sent them, without the code

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @classmethod
    def of(cls, reply: Reply) -> "UpstreamReply":
        """The answer relay records itself when the route gave none of its own."""
        return cls(reply.code, f"{reply.enhanced} {reply.text}")


_NO_SMTPUTF8 = UpstreamReply.of(replies.R553_ROUTE_NO_SMTPUTF8)


class RouteUnavailable(Exception):
    """No per-recipient answer could be had from the route; retry later."""


class RouteSession(Protocol):
    async def send(self, mail_from: str, recipients: list[str], body: bytes,
                   options: list[str]) -> list[UpstreamReply]: ...
    async def close(self) -> None: ...


class RouteClient(Protocol):
    name: str
    description: str
    def session(self) -> RouteSession: ...


# --- SMTP ----------------------------------------------------------------------------

class Phase(enum.StrEnum):
    """Where in a session a route failed, as its `RouteUnavailable` says."""
    CONNECT = "connecting"            # TCP, implicit TLS, the 220 greeting
    EHLO = "at EHLO"
    STARTTLS = "at STARTTLS"
    AUTH = "at AUTH"
    MAIL = "at MAIL"
    RCPT = "at RCPT"
    DATA = "at DATA"                  # DATA, the message, the reply to the final dot


_CLOSING = 421                        # RFC 5321 §3.8: service not available, closing the channel


class SmtpRoute:
    def __init__(self, name: str, route: Route, local_hostname: str,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.route = route
        self.description = f"{route.host}:{route.port}"
        self.local_hostname = local_hostname
        if tls_context is None and route.tls != "none":
            tls_context = tls.apply_policy(ssl.create_default_context(cafile=route.ca_file))
            if not route.verify_tls:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        self.tls_context = tls_context

    def session(self) -> "SmtpSession":
        return SmtpSession(self)


class SmtpSession:
    """One reusable connection to a route; reconnects after any failure."""

    def __init__(self, client: SmtpRoute) -> None:
        self.client = client
        self.smtp: aiosmtplib.SMTP | None = None
        self.phase = Phase.CONNECT

    async def _connect(self) -> aiosmtplib.SMTP:
        route, timeouts = self.client.route, self.client.route.timeouts
        self.phase = Phase.CONNECT
        smtp = aiosmtplib.SMTP(
            hostname=route.host, port=route.port, local_hostname=self.client.local_hostname,
            timeout=timeouts.command, use_tls=route.tls == "implicit", start_tls=False,
            tls_context=self.client.tls_context if route.tls != "none" else None)
        await smtp.connect(timeout=timeouts.connect)
        self.phase = Phase.EHLO
        await smtp.ehlo(timeout=timeouts.session)
        if route.tls == "starttls":
            self.phase = Phase.STARTTLS
            await smtp.starttls(timeout=timeouts.session)
            self.phase = Phase.EHLO
            await smtp.ehlo(timeout=timeouts.session)   # learn them again: RFC 3207 §4.2
        if route.username:
            self.phase = Phase.AUTH
            await smtp.login(route.username, route.password() or "", timeout=timeouts.session)
        return smtp

    async def send(self, mail_from: str, recipients: list[str], body: bytes,
                   options: list[str]) -> list[UpstreamReply]:
        try:
            if self.smtp is None or not self.smtp.is_connected:
                self.smtp = await self._connect()
            answers = await self._transaction(self.smtp, mail_from, recipients, body, options)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            await self.close()
            detail = f"{self.client.description}: {self._describe(exc)}"
            log.warning("route %s unavailable: %s", self.client.name, detail)
            raise RouteUnavailable(detail) from exc
        except Exception as exc:              # never reuse a session left mid-transaction
            await self.close()
            log.exception("unexpected failure talking to %s", self.client.description)
            raise RouteUnavailable(f"{self.client.description}: {type(exc).__name__}") from exc
        if any(a.code == _CLOSING for a in answers):
            await self.close()                # the server said it is closing: never reuse it
        return answers

    async def _transaction(self, smtp: aiosmtplib.SMTP, mail_from: str, recipients: list[str],
                           body: bytes, options: list[str]) -> list[UpstreamReply]:
        timeouts = self.client.route.timeouts
        utf8 = "SMTPUTF8" in options and smtp.supports_extension("smtputf8")
        mail_options = [o for o in options if o == "BODY=8BITMIME" and smtp.supports_extension("8bitmime")]
        if utf8:
            mail_options.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        if pipelining.usable(smtp, body) and _encodable([mail_from, *recipients], encoding):
            return await self._pipelined(smtp, mail_from, recipients, body, mail_options, encoding)
        self.phase = Phase.MAIL
        try:
            await smtp.mail(mail_from, options=mail_options, encoding=encoding,
                            timeout=timeouts.command)
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code != _CLOSING:
                await _reset(smtp, timeouts.command)
            return [UpstreamReply(exc.code, exc.message)] * len(recipients)
        except UnicodeEncodeError:
            await _reset(smtp, timeouts.command)
            return [_NO_SMTPUTF8] * len(recipients)
        self.phase = Phase.RCPT
        answers: list[UpstreamReply | None] = []
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt, encoding=encoding, timeout=timeouts.command)
                answers.append(None)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == _CLOSING:      # this one and every one not refused yet
                    closing = UpstreamReply(exc.code, exc.message)
                    answers += [None] * (len(recipients) - len(answers))
                    return [r or closing for r in answers]
                answers.append(UpstreamReply(exc.code, exc.message))
            except UnicodeEncodeError:
                answers.append(_NO_SMTPUTF8)
        if all(r is not None for r in answers):
            await _reset(smtp, timeouts.command)
            return answers  # type: ignore[return-value]
        self.phase = Phase.DATA
        try:
            response = await _data(smtp, body, timeouts.data)
            accepted = UpstreamReply(response.code, response.message)
        except aiosmtplib.SMTPDataError as exc:
            accepted = UpstreamReply(exc.code, exc.message)
            if exc.code != _CLOSING:
                await _reset(smtp, timeouts.command)
        return [r if r is not None else accepted for r in answers]

    async def _pipelined(self, smtp: aiosmtplib.SMTP, mail_from: str, recipients: list[str],
                         body: bytes, mail_options: list[str], encoding: str) -> list[UpstreamReply]:
        """`_transaction` in two round trips (`pipelining.py`), with the same answers (its
        addresses all encodable: those that are not take the other path, which answers
        them one by one)."""
        timeouts = self.client.route.timeouts
        outcome = await pipelining.transaction(
            smtp, pipelining.command(b"MAIL FROM:", mail_from, mail_options, encoding),
            [pipelining.command(b"RCPT TO:", r, [], encoding) for r in recipients], body,
            timeouts.command, timeouts.data, lambda stage: setattr(self, "phase", Phase[stage]))
        if outcome.reset:
            await _reset(smtp, timeouts.command)
        if outcome.mail is not None:
            return [UpstreamReply(outcome.mail.code, outcome.mail.message)] * len(recipients)
        return [UpstreamReply(a.code, a.message) for a in outcome.answers]

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, and where: the text of the deferred recipients' reply."""
        timeouts = self.client.route.timeouts
        phase = self.phase
        after_data = (" (the provider may have the message: it is sent again)"
                      if phase is Phase.DATA else "")
        tls_error = _tls_error(exc)
        if tls_error is not None or phase is Phase.STARTTLS:
            return f"TLS failed {phase}: {_text(tls_error or exc)}"
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return f"AUTH refused: {exc.code} {exc.message} (check the route's username and password_env)"
        if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError)):
            waited = {Phase.CONNECT: timeouts.connect, Phase.EHLO: timeouts.session,
                      Phase.AUTH: timeouts.session, Phase.DATA: timeouts.data}.get(phase, timeouts.command)
            return f"no reply within {waited:g}s {phase}{after_data}"
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return f"connection lost {phase}{after_data}"
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return f"{phase}: {exc.code} {exc.message}"
        return f"failed {phase}: {_text(exc)}"

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await asyncio.wait_for(smtp.quit(), timeout=5)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            pass
        finally:
            smtp.close()


async def _data(smtp: aiosmtplib.SMTP, body: bytes, timeout: float) -> aiosmtplib.SMTPResponse:
    """DATA and the message, dot-stuffed with one C-level replace. aiosmtplib's own `data()`
    normalizes line endings and dot-stuffs with two regular-expression passes over the
    whole message (most of the delivery process's CPU at 100 KB, bench/README.md), although
    relay stores messages CRLF-clean (the listener refuses bare CR and LF): a message that
    is not (never expected) goes through aiosmtplib's path instead."""
    clean = pipelining.crlf_clean(body)
    protocol = smtp.protocol
    lock = getattr(protocol, "_command_lock", None)
    if not clean or lock is None or not hasattr(protocol, "_response_pending"):
        return await smtp.data(body, timeout=timeout)
    stuffed = pipelining.dot_stuffed(body)
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=timeout)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(stuffed)
            protocol.write(b".\r\n")
            response = await protocol.read_response(timeout=timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _encodable(addresses: list[str], encoding: str) -> bool:
    try:
        for address in addresses:
            address.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


async def _reset(smtp: aiosmtplib.SMTP, timeout: float) -> None:
    """RSET after a refused transaction, so the session can carry the next one (never after
    a 421: the server is closing, and `send` closes the session)."""
    if not smtp.is_connected:
        return
    try:
        await smtp.rset(timeout=timeout)
    except aiosmtplib.SMTPResponseException:
        pass


def _tls_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind `exc`, if any (aiosmtplib wraps a failed implicit-TLS handshake
    in SMTPConnectError)."""
    while exc is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _text(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- outbox --------------------------------------------------------------------------

class OutboxRoute:
    """Writes messages into a directory instead of sending them (development, dry runs)."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.description = f"outbox {directory}"

    def session(self) -> "OutboxSession":
        return OutboxSession(self.directory)


class OutboxSession:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def send(self, mail_from: str, recipients: list[str], body: bytes,
                   options: list[str]) -> list[UpstreamReply]:
        try:
            name = await asyncio.to_thread(self._write, mail_from, recipients, body)
        except OSError as exc:
            raise RouteUnavailable(f"outbox {self.directory}: {exc.strerror}") from exc
        return [UpstreamReply.of(replies.R250_WRITTEN_TO_OUTBOX.format(name=name))] * len(recipients)

    def _write(self, mail_from: str, recipients: list[str], body: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        name = f"{os.getpid()}-{id(self):x}-{self.count}-{os.urandom(3).hex()}.eml"
        envelope = (f"X-Relay-Envelope-From: <{mail_from}>\r\n"
                    f"X-Relay-Envelope-To: {', '.join(f'<{r}>' for r in recipients)}\r\n").encode()
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(envelope + body)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, self.directory / name)
        return name

    async def close(self) -> None:
        pass


def build(name: str, route: Route, local_hostname: str) -> RouteClient:
    if route.outbox is not None:
        return OutboxRoute(name, route.outbox)
    return SmtpRoute(name, route, local_hostname)

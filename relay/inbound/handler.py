"""The aiosmtpd adapter: turns aiosmtpd hooks into calls of the acceptance pipeline.

This module and `inbound/server.py` are the only ones that know aiosmtpd. Each hook calls
one acceptance step and turns its outcome, or its error, into a reply line; `reply_for`
is the only place an exception becomes a reply.
"""
from __future__ import annotations

import base64
import binascii
import functools
import inspect
import logging
import secrets

from aiosmtpd.smtp import MISSING, AuthResult

from relay import metrics, replies
from relay.errors import RelayError, reply_for
from relay.events import Event, emit
from relay.inbound.acceptance import Acceptance, SessionState
from relay.replies import Reply

log = logging.getLogger("relay.smtp")


@functools.cache
def hook_names(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    """The names of `cls`'s attributes that start with one of `prefixes`: what aiosmtpd's
    SMTP.__init__ looks for with dir() and inspect.getmembers() on every connection (a
    getattr of every attribute, ~70 us each time), listed once (`__dir__` below and
    RelaySMTP's)."""
    return [name for name in dir(cls) if name.startswith(prefixes)]


class Handler:
    def __init__(self, acceptance: Acceptance) -> None:
        self.acceptance = acceptance

    def __dir__(self) -> list[str]:
        return hook_names(type(self), ("handle_", "auth_"))

    @staticmethod
    def state(session) -> SessionState:
        return session.relay_state

    async def handle_HELO(self, server, session, envelope, hostname: str) -> str:
        session.host_name = hostname
        self.state(session).helo = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        self.state(session).helo = hostname
        # aiosmtpd reads commands one by one from its buffer, so batched commands are safe
        # (RFC 2920); every reply carries an enhanced status code (RFC 2034).
        return responses[:-1] + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    # aiosmtpd reads the hook's signature on every connection: computed once instead
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)

    async def handle_MAIL(self, server, session, envelope, address: str, options: list[str]) -> str:
        try:
            reply = await self.acceptance.mail_from(self.state(session), address,
                                                    smtputf8="SMTPUTF8" in options)
        except Exception as exc:
            return self._refuse(session, "MAIL", exc, address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(reply)

    async def handle_RCPT(self, server, session, envelope, address: str, options: list[str]) -> str:
        try:
            reply = await self.acceptance.rcpt_to(self.state(session), address)
        except Exception as exc:
            return self._refuse(session, "RCPT", exc, address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(reply)

    async def handle_DATA(self, server, session, envelope) -> str:
        try:
            reply = await self.acceptance.data(
                self.state(session), envelope.mail_from, list(envelope.rcpt_tos),
                envelope.original_content, list(envelope.mail_options))
        except Exception as exc:
            return self._refuse(session, "DATA", exc, envelope.mail_from)
        finally:
            self.state(session).queue_id = ""
        return str(reply)

    async def handle_RSET(self, server, session, envelope) -> str:
        self.state(session).recipients = 0
        return str(replies.R250_RESET)

    # AUTH mechanisms (RFC 4616 PLAIN, and the LOGIN mechanism every client still sends).
    async def auth_PLAIN(self, server, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            blob = _b64(args[1])
        parts = blob.split(b"\x00") if blob is not None else []
        if len(parts) != 3:
            await server.push(str(replies.R501_BAD_AUTH_RESPONSE))
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:        # RFC 4616 §2: no acting as another user
            refused(self.state(server.session), "AUTH", replies.R535_AUTH_FAILED,
                    "authorization identity differs from the login")
            return AuthResult(success=False, handled=False)
        return await self._authenticate(server, login, password)

    async def auth_LOGIN(self, server, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth("Username:")
        else:
            login = _b64(args[1])
        if login is None:
            await server.push(str(replies.R501_BAD_AUTH_RESPONSE))
            return AuthResult(success=False, handled=True)
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password)

    async def _authenticate(self, server, login: bytes, password: bytes) -> AuthResult:
        state = self.state(server.session)
        try:
            username = login.decode("utf-8")
            principal = await self.acceptance.authenticate(state, username, password)
        except UnicodeDecodeError:
            refused(state, "AUTH", replies.R535_AUTH_FAILED, "login is not UTF-8")
            return AuthResult(success=False, handled=False)
        except Exception as exc:
            reply = reply_for(exc, secrets.token_hex(4))
            refused(state, "AUTH", reply, exc.detail if isinstance(exc, RelayError) else "")
            return AuthResult(success=False, handled=False, message=str(reply))
        return AuthResult(success=True, auth_data=principal)

    def _refuse(self, session, command: str, exc: Exception, address: str | None) -> str:
        state = self.state(session)
        reply = reply_for(exc, state.queue_id or secrets.token_hex(4))
        refused(state, command, reply, exc.detail if isinstance(exc, RelayError) else "")
        return str(reply)


def refused(state: SessionState, command: str, reply: Reply, detail: str = "") -> None:
    """A refusal leaves its trace: a `rejected` event and relay_messages_rejected_total."""
    metrics.MESSAGES_REJECTED.labels((reply.reason or replies.Refusal.TEMPORARY).value).inc()
    user = state.principal.username if state.principal else None
    emit(Event.REJECTED, id=state.queue_id or None, command=command, listener=state.listener,
         ip=state.ip, user=user, domain=state.sender_domain or None, reply=str(reply),
         detail=detail or None)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None

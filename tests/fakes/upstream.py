"""A recording fake provider: an SMTP server on 127.0.0.1:0 that obeys magic recipients.

Magic local parts (anything before an optional `+tag`):
  tempfail@  -> 451 4.3.0 at RCPT, every time
  permfail@  -> 550 5.1.1 at RCPT
  flaky@     -> 451 4.3.0 at RCPT the first time this address is seen, then accepted
  slow@      -> the DATA reply waits `slow_delay` seconds
Everything else is accepted and recorded in `messages`. It offers PIPELINING (RFC 2920), as
the providers relay routes to do (aiosmtpd reads pipelined commands in order; it just does
not say so), unless `pipelining=False`. It runs its own event loop in a thread, so tests (and
a relay in another process) talk to it over a real socket.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    auth_user: str | None
    at: float = 0.0            # when its DATA was answered (time.time())


class _Handler:
    def __init__(self, fake: "FakeUpstream") -> None:
        self.fake = fake

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.fake.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options):
        local = address.split("@")[0].split("+")[0].lower()
        with self.fake.lock:
            self.fake.rcpt_attempts[address] += 1
            seen = self.fake.rcpt_attempts[address]
        if local == "tempfail" or (local == "flaky" and seen == 1):
            return "451 4.3.0 Temporary failure, try again"
        if local == "permfail":
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@")[0].split("+")[0].lower() == "slow" for r in envelope.rcpt_tos):
            await asyncio.sleep(self.fake.slow_delay)
        user = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.fake.lock:
            self.fake.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                               envelope.original_content, user, time.time()))
        return "250 2.0.0 Ok: queued"


class FakeUpstream:
    def __init__(self, tls: str = "none", tls_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None, slow_delay: float = 2.0,
                 port: int = 0, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.tls = tls
        self.tls_context = tls_context
        self.credentials = credentials
        self.slow_delay = slow_delay
        self.messages: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.port = port            # 0: any free port (a fixed one: "the provider comes back")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        ok = (self.credentials is not None and isinstance(auth_data, LoginPassword)
              and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _factory(self) -> SMTP:
        return SMTP(_Handler(self), hostname="fake-upstream", enable_SMTPUTF8=True,
                    tls_context=self.tls_context if self.tls == "starttls" else None,
                    require_starttls=self.tls == "starttls",
                    auth_required=self.credentials is not None,
                    auth_require_tls=self.tls == "starttls",
                    authenticator=self._authenticator, data_size_limit=None)

    def start(self) -> "FakeUpstream":
        self._thread.start()
        ssl_ctx = self.tls_context if self.tls == "implicit" else None
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._factory, "127.0.0.1", self.port, ssl=ssl_ctx,
                                     backlog=512, reuse_address=True),
            self._loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- assertions helpers ---------------------------------------------------------
    def delivered_to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        return wait_for_messages(self, predicate, timeout, what)


def wait_for_messages(fake, predicate, timeout: float, what: str):
    """`predicate(messages)` of a fake provider (one with `lock` and `messages`), polled
    until it is true (returned) or `timeout` passes (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with fake.lock:
            result = predicate(list(fake.messages))
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                         f"the fake provider has {len(fake.messages)} message(s)")

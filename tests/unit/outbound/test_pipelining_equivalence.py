"""relay.outbound.pipelining against the one-command-at-a-time path: the same answers, over
real sockets, plain and TLS (STARTTLS, implicit), on asyncio's loop and uvloop's (the
delivery process runs on uvloop).

`Provider` is a small scripted SMTP server of this file's own (its own loop, in a thread):
it answers each command as soon as it reads it (nothing held), so the same server serves
both paths, and `both()` runs a scenario once with PIPELINING offered and once without: the
answers must be the same.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
import uvloop

from relay.config import Route
from relay.outbound.upstream import RouteUnavailable, SmtpRoute

BODY = b"Subject: hi\r\n\r\nhi\r\n.dot line\r\n"


@dataclass(frozen=True)
class Later:
    seconds: float
    text: str


@dataclass(frozen=True)
class Silent:                         # no reply at all; keep reading
    pass


@dataclass(frozen=True)
class Close:                          # close the connection without a reply
    pass


@dataclass
class Session:
    number: int
    commands: list[str] = field(default_factory=list)
    accepted: int = 0
    ended: threading.Event = field(default_factory=threading.Event)


Answer = Callable[[Session, str, str], "str | Later | Silent | Close | None"]


class Provider:
    """`answer(session, verb, arg)` may replace the normal reply (None: the normal one); the
    verb is "." for the reply to the final dot."""

    def __init__(self, answer: Answer | None = None, *, pipelining: bool = True, tls: str = "none",
                 context: ssl.SSLContext | None = None, dribble: bool = False) -> None:
        self.answer = answer or (lambda s, v, a: None)
        self.pipelining, self.tls, self.context, self.dribble = pipelining, tls, context, dribble
        self.sessions: list[Session] = []
        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "Provider":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self.context if self.tls == "implicit" else None),
            self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def session(self, number: int) -> Session:
        with self.lock:
            return self.sessions[number]

    async def _write(self, writer: asyncio.StreamWriter, text: str) -> None:
        data = (text + "\r\n").encode()
        if self.dribble:                      # one byte a write: replies split across reads
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
        else:
            writer.write(data)
            await writer.drain()

    async def _reply(self, writer, session: Session, verb: str, arg: str, normal: str) -> str | None:
        action = self.answer(session, verb, arg)
        if isinstance(action, Close):
            raise ConnectionAbortedError
        if isinstance(action, Silent):
            return None
        if isinstance(action, Later):
            await asyncio.sleep(action.seconds)
            action = action.text
        text = action if isinstance(action, str) else normal
        await self._write(writer, text)
        return text

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            session = Session(len(self.sessions))
            self.sessions.append(session)
        secure = self.tls == "implicit"
        try:
            await self._write(writer, "220 provider ESMTP")
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                session.commands.append(command)
                verb, _, arg = command.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    lines = ["provider", "8BITMIME", "SMTPUTF8"] + ["PIPELINING"] * self.pipelining
                    if self.tls == "starttls" and not secure:
                        lines.append("STARTTLS")
                    await self._write(writer, "\r\n".join(
                        f"250{'-' if i < len(lines) - 1 else ' '}{t}" for i, t in enumerate(lines)))
                elif verb == "STARTTLS":
                    await self._write(writer, "220 2.0.0 Ready to start TLS")
                    await writer.start_tls(self.context)
                    secure = True
                elif verb == "MAIL":
                    session.accepted = 0
                    await self._reply(writer, session, verb, arg, "250 2.1.0 Ok")
                elif verb == "RCPT":
                    text = await self._reply(writer, session, verb, arg, "250 2.1.5 Ok")
                    session.accepted += bool(text and text.startswith("2"))
                elif verb == "DATA":
                    normal = "354 go ahead" if session.accepted else "554 5.5.1 no valid recipients"
                    text = await self._reply(writer, session, verb, arg, normal)
                    if text and text.startswith("354"):
                        lines = []
                        while (line := await reader.readline()) != b".\r\n":
                            if not line:
                                return
                            lines.append(line[1:] if line.startswith(b".") else line)
                        with self.lock:
                            self.messages.append(b"".join(lines))
                        await self._reply(writer, session, ".", "", "250 2.0.0 Ok: queued")
                elif verb == "RSET":
                    session.accepted = 0
                    await self._write(writer, "250 2.0.0 Ok")
                elif verb == "QUIT":
                    await self._write(writer, "221 2.0.0 Bye")
                    break
                else:
                    await self._write(writer, "502 5.5.2 what")
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            session.ended.set()
            writer.close()


# --- helpers --------------------------------------------------------------------------

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _route(provider: Provider, client_tls: ssl.SSLContext | None = None, **timeouts: str) -> SmtpRoute:
    config = Route(host="127.0.0.1", port=provider.port, tls=provider.tls,
                   timeouts={"command": "3s", "data": "10s", **timeouts})
    return SmtpRoute("provider", config, "relay.test", tls_context=client_tls)


@contextlib.contextmanager
def _tls_provider(answer, tls: str, tls_pair):
    """A provider answering with `answer` over `tls` ("none", "starttls", "implicit"), and a
    route to it that trusts its certificate: (provider, route)."""
    server, client = tls_pair
    with Provider(answer, tls=tls, context=server) as provider:
        yield provider, _route(provider, client if tls != "none" else None)


def _run(coro_fn, loop: str = "asyncio"):
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(coro_fn())


def _on_a_session(route: SmtpRoute, use, loop: str = "asyncio"):
    """`await use(session)` on one session of `route` (as a delivery worker holds one),
    closed after, on `loop`."""
    async def run():
        session = route.session()
        try:
            return await use(session)
        finally:
            await session.close()
    return _run(run, loop)


async def _answers(session, recipients=("a@x.net",)) -> list[str]:
    return [str(a) for a in await session.send("s@acme.fr", list(recipients), BODY, [])]


def _send(route: SmtpRoute, recipients, options=(), body: bytes = BODY, messages: int = 1,
          loop: str = "asyncio") -> list[list[str]] | str:
    """Each message's answers, or the RouteUnavailable's text."""
    async def use(session):
        try:
            return [[str(a) for a in await session.send("billing@acme.fr", list(recipients), body,
                                                          list(options))]
                    for _ in range(messages)]
        except RouteUnavailable as exc:
            return f"RouteUnavailable: {str(exc).split(': ', 1)[1]}"
    return _on_a_session(route, use, loop)


def both(answer: Answer, recipients, options=(), **timeouts: str) -> tuple:
    """The scenario's answers one command at a time, then pipelined."""
    results = []
    for pipelining in (False, True):
        with Provider(answer, pipelining=pipelining) as provider:
            results.append(_send(_route(provider, **timeouts), recipients, options))
    return tuple(results)


@pytest.fixture(scope="module")
def tls_pair(ca):
    """(server context, client context) for 127.0.0.1."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- answers that once differed from the one-command-at-a-time path ----------------------

def test_the_354_waits_the_data_timeout_as_one_command_at_a_time():
    """Both paths wait `timeouts.data` for DATA's 354 (config: "data: DATA, the message,
    the reply to the final dot"): a provider slow to open DATA is delivered either way (the
    pipelined path once waited the command timeout, and deferred it)."""
    def answer(session, verb, arg):
        return Later(1.0, "354 go ahead") if verb == "DATA" else None
    one_at_a_time, pipelined = both(answer, ["a@example.net"], command="0.3s", data="10s")
    assert one_at_a_time == [["250 2.0.0 Ok: queued"]]
    assert pipelined == one_at_a_time


def test_a_utf8_recipient_after_a_421_gets_the_421_as_one_command_at_a_time():
    """One at a time, a 421 at RCPT answers every recipient not asked yet, an unencodable
    (UTF-8, no SMTPUTF8) one included: deferred, not bounced. A transaction with an
    unencodable address therefore takes the one-at-a-time path."""
    def answer(session, verb, arg):
        return "421 4.7.0 closing" if verb == "RCPT" and "b@" in arg else None
    one_at_a_time, pipelined = both(answer, ["a@example.net", "b@example.net", "ü@example.net"])
    assert one_at_a_time == [["421 4.7.0 closing"] * 3]
    assert pipelined == one_at_a_time


def test_only_utf8_recipients_and_mail_refused_gets_mail_s_reply_as_one_command_at_a_time():
    """One at a time, MAIL is sent before any RCPT is encoded, so a refused MAIL (here 421)
    answers every recipient: the same whether or not PIPELINING is offered."""
    def answer(session, verb, arg):
        return "421 4.7.0 closing" if verb == "MAIL" else None
    one_at_a_time, pipelined = both(answer, ["ü@example.net", "é@example.net"])
    assert one_at_a_time == [["421 4.7.0 closing"] * 2]
    assert pipelined == one_at_a_time


# --- the same answers either way -----------------------------------------------------------

@pytest.mark.parametrize("name, answer, recipients", [
    ("mail 550", lambda s, v, a: "550 5.7.1 no" if v == "MAIL" else None, ["a@x.net", "b@x.net"]),
    ("mail 421", lambda s, v, a: "421 4.7.0 bye" if v == "MAIL" else None, ["a@x.net", "b@x.net"]),
    ("one rcpt 550", lambda s, v, a: "550 5.1.1 no" if v == "RCPT" and "b@" in a else None,
     ["a@x.net", "b@x.net", "c@x.net"]),
    ("all rcpt 550", lambda s, v, a: "550 5.1.1 no" if v == "RCPT" else None, ["a@x.net", "b@x.net"]),
    ("all rcpt 550, 354", lambda s, v, a: {"RCPT": "550 5.1.1 no", "DATA": "354 go"}.get(v),
     ["a@x.net", "b@x.net"]),
    ("rcpt 550 then 421", lambda s, v, a: "550 5.1.1 no" if "a@" in a else "421 4.7.0 bye"
     if v == "RCPT" else None, ["a@x.net", "b@x.net", "c@x.net"]),
    ("data 452", lambda s, v, a: "452 4.3.1 full" if v == "DATA" else None, ["a@x.net", "b@x.net"]),
    ("data 421", lambda s, v, a: "421 4.3.1 bye" if v == "DATA" else None, ["a@x.net", "b@x.net"]),
    ("dot 554", lambda s, v, a: "554 5.7.1 spam" if v == "." else None, ["a@x.net", "b@x.net"]),
    ("dot 421", lambda s, v, a: "421 4.7.1 bye" if v == "." else None, ["a@x.net", "b@x.net"]),
    ("utf8 among ascii", lambda s, v, a: None, ["a@x.net", "ü@x.net", "b@x.net"]),
    ("multi-line", lambda s, v, a: "250-one\r\n250-two\r\n250 three" if v in ("MAIL", "RCPT") else None,
     ["a@x.net", "b@x.net"]),
])
def test_the_same_answers_either_way(name, answer, recipients):
    one_at_a_time, pipelined = both(answer, recipients)
    assert pipelined == one_at_a_time


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_over_tls_the_session_carries_on_after_each_transaction(tls_pair, tls, loop):
    """set_protocol/get_protocol on asyncio's and uvloop's TLS transports; aiosmtplib's
    protocol, put back, runs the RSET after a refused transaction and the QUIT at the end;
    three transactions, one connection."""
    def answer(session, verb, arg):
        return "550 5.1.1 no" if verb == "RCPT" and "bad@" in arg else None
    with _tls_provider(answer, tls, tls_pair) as (provider, route):

        async def use(session):
            return [await _answers(session, rcpts)
                    for rcpts in (["a@x.net"], ["bad@x.net"], ["a@x.net", "bad@x.net"])]
        answers = _on_a_session(route, use, loop)
        commands = [c.split(" ")[0] for c in provider.session(0).commands]
        assert len(provider.sessions) == 1
        assert provider.messages == [BODY, BODY]
    assert answers == [["250 2.0.0 Ok: queued"], ["550 5.1.1 no"], ["250 2.0.0 Ok: queued", "550 5.1.1 no"]]
    assert commands[-9:] == ["MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("loop", LOOPS)
def test_replies_split_into_single_bytes(loop):
    with Provider(dribble=True) as provider:
        answers = _send(_route(provider), ["a@x.net", "b@x.net"], messages=2, loop=loop)
    assert answers == [["250 2.0.0 Ok: queued"] * 2] * 2


@pytest.mark.parametrize("loop", LOOPS)
def test_a_large_body_over_tls(tls_pair, loop):
    """16 MB: pause_writing/resume_writing reach `Replies` (no-ops) or aiosmtplib's protocol
    (which never drains): either way the body arrives whole and the session carries on."""
    body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + (b"." + b"y" * 997 + b"\r\n") * 16_000
    server, client = tls_pair
    with Provider(tls="starttls", context=server) as provider:
        answers = _send(_route(provider, client), ["a@x.net"], body=body, messages=2, loop=loop)
        assert provider.messages == [body, body]
    assert answers == [["250 2.0.0 Ok: queued"]] * 2


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_a_connection_lost_mid_transaction_then_the_next_message(tls_pair, tls, loop):
    """Lost while `Replies` is installed: RouteUnavailable naming DATA, and the same session
    object connects again for the next message.

    On asyncio's TLS transport the connection is already closed when the transaction gives
    up, and closing an `_SSLProtocolTransport` a second time sets its `_ssl_protocol` to
    None (Lib/asyncio/sslproto.py), after which `set_protocol` raised AttributeError: the
    provider's disconnect was reported as "AttributeError". `pipelining._abort` closes once."""
    def answer(session, verb, arg):
        return Close() if verb == "." and session.number == 0 else None
    with _tls_provider(answer, tls, tls_pair) as (provider, route):

        async def use(session):
            with pytest.raises(RouteUnavailable) as info:
                await _answers(session)
            return str(info.value), await _answers(session)
        error, answers = _on_a_session(route, use, loop)
    assert error.endswith("connection lost at DATA (the provider may have the message: it is sent again)")
    assert answers == ["250 2.0.0 Ok: queued"]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_cancelled_mid_transaction_closes_the_connection_and_the_next_send_reconnects(tls_pair, tls, loop):
    """The delivery worker cancelled (shutdown) while the final dot's reply is awaited: the
    connection is closed (the provider sees it end), nothing is left installed, and a later
    send on the same session object gets a new connection."""
    def answer(session, verb, arg):
        return Silent() if verb == "." and session.number == 0 else None
    with _tls_provider(answer, tls, tls_pair) as (provider, route):

        async def use(session):
            task = asyncio.create_task(_answers(session))
            loop_ = asyncio.get_running_loop()
            deadline = loop_.time() + 10
            while not provider.messages and loop_.time() < deadline:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            ended = await asyncio.to_thread(provider.session(0).ended.wait, 10)
            return ended, await _answers(session)
        ended, answers = _on_a_session(route, use, loop)
        assert len(provider.sessions) == 2
    assert ended
    assert answers == ["250 2.0.0 Ok: queued"]


def test_a_reply_after_the_timeout_is_not_taken_for_the_next_command():
    """The dot's reply comes after `data` ran out: the connection is closed, and the next
    message goes on a new one (no stale reply paired with its MAIL)."""
    def answer(session, verb, arg):
        if session.number == 0 and verb == ".":
            return Later(0.6, "250 2.0.0 late")
        return None
    with Provider(answer) as provider:
        route = _route(provider, data="0.3s")

        async def use(session):
            with pytest.raises(RouteUnavailable):
                await _answers(session)
            return await _answers(session)
        answers = _on_a_session(route, use)
        assert len(provider.sessions) == 2
    assert answers == ["250 2.0.0 Ok: queued"]

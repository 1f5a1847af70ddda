"""A scripted fake provider: an SMTP server on 127.0.0.1:0 that misbehaves on cue.

`MisbehavingUpstream(script={...})` speaks just enough SMTP for relay's route client
(EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and, at the points named
in `script`, does what the script says instead of its normal reply:

    point:  "greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data" (the 354),
            "dot" (the reply to the final dot)
    action: Reply("421 4.7.0 ...")   this reply instead (the connection stays open, so a
                                     test sees whether the client goes on using it)
            Drop()                   close the connection without a reply
            Delay(seconds)           the normal reply, that much later
            Garbage()                (starttls) 220, then bytes that are not TLS

Only the first `faulty_sessions` connections follow the script (all of them by default);
later ones behave, so a test can watch a deferred message be delivered on a retry. Every
message that reached its final dot is in `messages` with the reply it got (None: dropped),
and every session's commands are in `sessions`. With `tls_context` it offers STARTTLS and
upgrades with that context (a test's own: an untrusted certificate, TLS 1.1 only...); with
`credentials` it offers AUTH PLAIN and answers 535 to anything else. With `pipelining` it
offers PIPELINING (RFC 2920) and holds its MAIL and RCPT replies until it reads DATA, then
sends them with DATA's: only a client that pipelines gets past MAIL (one that waits for each
reply times out). It follows a refused MAIL with 503 to RCPT, and answers DATA with 554
when no recipient was accepted, as servers do, unless the script says otherwise.
It runs its own event loop in a thread, like `FakeUpstream`; use it as a context manager.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from dataclasses import dataclass, field

from tests.fakes.upstream import wait_for_messages


@dataclass(frozen=True)
class Reply:
    line: str


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Garbage:
    pass


Action = Reply | Drop | Delay | Garbage


@dataclass
class Received:
    session: int
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    reply: str | None               # what the final dot got; None: the connection was dropped


@dataclass
class _Session:
    number: int
    commands: list[str] = field(default_factory=list)
    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    tls: bool = False
    mail_ok: bool = False
    held: list[str] = field(default_factory=list)          # replies held until DATA (pipelining)


class _Dropped(Exception):
    """The script closed the connection."""


class MisbehavingUpstream:
    def __init__(self, script: dict[str, Action] | None = None, faulty_sessions: int | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None, pipelining: bool = False) -> None:
        self.script = script or {}
        self.pipelining = pipelining
        self.faulty_sessions = faulty_sessions
        self.tls_context = tls_context
        self.credentials = credentials
        self.messages: list[Received] = []
        self.sessions: list[list[str]] = []
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> "MisbehavingUpstream":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "MisbehavingUpstream":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- what tests look at -------------------------------------------------------------
    def accepted(self) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.reply and m.reply.startswith("250")]

    def commands(self, session: int) -> list[str]:
        with self.lock:
            return list(self.sessions[session])

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        return wait_for_messages(self, predicate, timeout, what)

    # --- the SMTP side ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            session = _Session(len(self.sessions))
            self.sessions.append(session.commands)
        try:
            await self._reply(writer, session, "greeting", "220 fake-misbehaving ESMTP")
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                with self.lock:
                    session.commands.append(command)
                if not await self._command(reader, writer, session, command):
                    break
        except (_Dropped, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:   # stop(): end quietly (asyncio logs a cancelled handler)
            pass
        finally:
            writer.close()

    async def _command(self, reader, writer, session: _Session, command: str) -> bool:
        """Answer one command; False when the session is over."""
        verb, _, arg = command.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            lines = ["fake-misbehaving", "8BITMIME", "SMTPUTF8"] + ["PIPELINING"] * self.pipelining
            if self.tls_context is not None and not session.tls:
                lines.append("STARTTLS")
            if self.credentials is not None:
                lines.append("AUTH PLAIN")
            await self._reply(writer, session, "ehlo",
                              "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{text}"
                                          for i, text in enumerate(lines)))
        elif verb == "STARTTLS":
            await self._starttls(reader, writer, session)
        elif verb == "AUTH":
            ok = self.credentials is not None and _plain(arg) == self.credentials
            await self._reply(writer, session, "auth", "235 2.7.0 Authentication successful"
                              if ok else "535 5.7.8 Authentication credentials invalid")
        elif verb == "MAIL":
            session.mail_from, session.rcpt_tos = _address(arg), []
            session.mail_ok = (await self._reply(writer, session, "mail", "250 2.1.0 Ok",
                                                 hold=self.pipelining)).startswith("2")
        elif verb == "RCPT":
            if not session.mail_ok:
                await self._reply(writer, session, None, "503 5.5.1 Error: need MAIL command",
                                  hold=self.pipelining)
            elif (await self._reply(writer, session, "rcpt", "250 2.1.5 Ok",
                                    hold=self.pipelining)).startswith("2"):
                session.rcpt_tos.append(_address(arg))
        elif verb == "DATA":
            normal = ("354 End data with <CR><LF>.<CR><LF>" if session.rcpt_tos
                      else "554 5.5.1 Error: no valid recipients")
            if (await self._reply(writer, session, "data", normal)).startswith("354"):
                await self._data(reader, writer, session)
        elif verb in ("RSET", "NOOP"):
            session.mail_ok, session.rcpt_tos = False, []
            await self._reply(writer, session, None, "250 2.0.0 Ok")
        elif verb == "QUIT":
            await self._reply(writer, session, None, "221 2.0.0 Bye")
            return False
        else:
            await self._reply(writer, session, None, "502 5.5.2 Command not recognized")
        return True

    async def _data(self, reader, writer, session: _Session) -> None:
        lines = []
        while (line := await reader.readline()) != b".\r\n":
            if not line:
                raise _Dropped()
            lines.append(line[1:] if line.startswith(b".") else line)
        received = Received(session.number, session.mail_from, list(session.rcpt_tos),
                            b"".join(lines), None)
        with self.lock:
            self.messages.append(received)
        session.mail_from, session.rcpt_tos, session.mail_ok = "", [], False
        received.reply = await self._reply(writer, session, "dot", "250 2.0.0 Ok: queued")

    async def _starttls(self, reader, writer, session: _Session) -> None:
        action = self._action(session, "starttls")
        if self.tls_context is None or session.tls:
            await self._reply(writer, session, None, "502 5.5.1 STARTTLS not offered")
            return
        if not (await self._reply(writer, session, "starttls", "220 2.0.0 Ready to start TLS")
                ).startswith("220"):
            return
        if isinstance(action, Garbage):
            await reader.read(4096)              # the client's hello, answered with nonsense
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            while await reader.read(4096):       # until the client gives up and closes
                pass
            raise _Dropped()
        await writer.start_tls(self.tls_context)
        session.tls = True

    # --- the script ---------------------------------------------------------------------
    def _action(self, session: _Session, point: str | None) -> Action | None:
        if point is None or (self.faulty_sessions is not None and session.number >= self.faulty_sessions):
            return None
        return self.script.get(point)

    async def _reply(self, writer, session: _Session, point: str | None, normal: str,
                     hold: bool = False) -> str:
        """Send the normal reply at `point`, or what the script says instead (`hold`: with the
        next reply not held); returns it."""
        action = self._action(session, point)
        if isinstance(action, Drop):
            raise _Dropped()
        if isinstance(action, Delay):
            await asyncio.sleep(action.seconds)
        text = action.line if isinstance(action, Reply) else normal
        session.held.append(text)
        if not hold:
            writer.write("".join(f"{line}\r\n" for line in session.held).encode())
            session.held.clear()
            await writer.drain()
        return text


def _address(arg: str) -> str:
    """`FROM:<a@b> SIZE=1` -> `a@b`."""
    value = arg.partition(":")[2].strip()
    return value[1:value.index(">")] if value.startswith("<") and ">" in value else value.split(" ")[0]


def _plain(arg: str) -> tuple[str, str] | None:
    """The credentials of `AUTH PLAIN <base64>` (RFC 4616), or None."""
    mechanism, _, initial = arg.partition(" ")
    if mechanism.upper() != "PLAIN" or not initial:
        return None
    try:
        _, user, password = base64.b64decode(initial).decode().split("\0")
    except ValueError:
        return None
    return user, password

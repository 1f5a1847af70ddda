"""The SMTP listeners: one asyncio server per `server.listeners` entry, and draining them.

`RelaySMTP` is aiosmtpd's protocol with relay's edges: admission before the banner,
the per-session `SessionState` carried across STARTTLS, the library's own replies
rewritten into relay's named replies, and a registry of open sessions so SIGTERM can
stop listening, close idle sessions with 421, and let sessions mid-transaction finish.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import logging
import re
import secrets
import ssl
import types
import warnings
from typing import Callable

from email._header_value_parser import get_addr_spec, get_angle_addr

from aiosmtpd.smtp import SMTP, TLSSetupException, syntax

from relay import metrics, replies
from relay.config import Config, Listener
from relay.errors import RelayError, reply_for
from relay.inbound.acceptance import Acceptance, SessionState
from relay.inbound.handler import Handler, hook_names, refused
from relay.replies import Reply

log = logging.getLogger("relay.smtp")

# aiosmtpd logs every command at INFO and a deprecation warning on every AUTH: keep it quiet.
logging.getLogger("mail.log").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

# aiosmtpd's own reply lines, and the named reply relay sends instead.
_LIBRARY_REPLIES: list[tuple[str, Reply]] = [
    ("552 Error: message size exceeds", replies.R552_SIZE_EXCEEDED),
    ("500 Command line too long", replies.R500_COMMAND_TOO_LONG),
    ("530 Must issue a STARTTLS", replies.R530_STARTTLS_FIRST),
    ("538 5.7.11 Encryption required for requested", replies.R538_ENCRYPTION_REQUIRED),
    ("553 5.1.3 Error: malformed address", replies.R553_BAD_ADDRESS),
]


_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}[ \r]|^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}$")
# The enhanced code for a library reply that has none, by basic code (RFC 3463 §3).
_DEFAULT_ENHANCED = {500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
                     530: "5.7.0", 535: "5.7.8", 538: "5.7.11", 554: "5.7.0", 555: "5.5.4",
                     421: "4.3.2", 454: "4.7.0"}


def with_enhanced_code(line: str) -> str:
    """`503 Error: need MAIL command` -> `503 5.5.1 Error: need MAIL command`."""
    if len(line) < 4 or not line[:3].isdigit() or line[0] not in "245" or _ENHANCED.match(line):
        return line
    code = int(line[:3])
    enhanced = _DEFAULT_ENHANCED.get(code, f"{line[0]}.0.0")
    return f"{line[:4]}{enhanced} {line[4:]}" if len(line) > 4 else f"{line[:4]}{enhanced}"


@functools.cache
def _answering(cls: type) -> dict[str, Callable]:
    """The class's `smtp_` methods, each wrapped once (not on every connection) to note
    the command its replies answer."""
    def wrapped(name: str, method: Callable) -> Callable:
        @functools.wraps(method)            # keeps aiosmtpd's syntax marks (HELP reads them)
        async def call(self, arg):
            if self._hung_up():         # after "502 ... goodbye": pipelined commands don't run
                return
            self._command = name
            await method(self, arg)  # (if it raises, handle_exception's reply is still its)
            self._command = "OTHER"                 # for a line refused before any command runs
        return call
    return {attr.replace("smtp_", ""): wrapped(attr.replace("smtp_", ""), getattr(cls, attr))
            for attr in hook_names(cls, ("smtp_",))}


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


def simple_address(arg: str) -> tuple[str, str] | None:
    """`<local@domain> rest` as the email package's parser reads it, without it, for the
    ASCII dot-atom addresses applications send (the parser builds a token tree: ~5% of the
    listener's CPU); None for anything else, which the parser reads."""
    match = _SIMPLE.match(arg)
    if match is None:
        return None
    rest = arg[match.end():].lstrip(" \t")
    if rest.startswith("("):                # a comment: the parser's to skip
        return None
    return match.group(1), rest


def printable(line: str) -> str:
    """A reply line as RFC 5321 §4.2 allows its text (printable, UTF-8 by RFC 6531): a
    control character or an undecodable byte that it repeats of the client's input (aiosmtpd
    answers `500 Error: command "<name>" not recognized`) becomes "?"."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in line)


class RelaySMTP(SMTP):
    line_length_limit = 65536          # applications do send long HTML lines; don't refuse them

    def __dir__(self) -> list[str]:
        """Only aiosmtpd's __init__ asks (`handler.hook_names`): the class's `auth_` methods
        (its AUTH mechanisms), listed once, not every attribute read on every connection.
        Not the `smtp_` ones, which it would bind to make its command table: `__init__`
        below puts `_answering`'s in its place."""
        return hook_names(type(self), ("auth_",))

    def __init__(self, handler: Handler, acceptance: Acceptance, listener: Listener,
                 sessions: set, max_size: int, **kwargs) -> None:
        # aiosmtpd keeps the per-command line limits in a table its class shares and adds
        # SIZE's and SMTPUTF8's octets to MAIL's at every EHLO: this session's own table
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **kwargs)
        self._acceptance = acceptance
        self._listener = listener
        self._sessions = sessions
        self._max_size = max_size
        self._state: SessionState | None = None
        self._refused = False
        self._closed_once = False
        self._greeted = False           # the 220 greeting has been sent
        self._in_hello = False          # answering HELO/EHLO: no enhanced codes there
        self._in_data = False           # reading a message's data
        self._continued: list[str] = []
        self._command = "CONNECT"       # what the replies being sent answer (for metrics)
        self._smtp_methods = {name: types.MethodType(call, self)
                              for name, call in _answering(type(self)).items()}

    async def handle_exception(self, error: Exception) -> str:
        """An exception escaped a command: `reply_for` makes it a reply (451 4.3.0 with a
        reference, for anything unexpected), and it counts as a refusal. A STARTTLS handshake
        that failed (a scanner, a client without a common protocol or suite) is the client's
        matter: one info line, and aiosmtpd closes the connection."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__
            log.info("STARTTLS handshake with %s failed: %s", self._state.ip,
                     (str(cause) or type(cause).__name__) if cause else "no reason given")
            return str(replies.R421_SHUTTING_DOWN)          # never sent: the channel is gone
        reply = reply_for(error, self._state.queue_id or secrets.token_hex(4))
        refused(self._state, self._command, reply, type(error).__name__)
        return str(reply)

    def _create_session(self):
        session = super()._create_session()
        session.relay_state = self._state
        return session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._state is None:                           # a new connection, not STARTTLS
            peer = transport.get_extra_info("peername") or ("unknown", 0)
            self._state = SessionState(ip=str(peer[0]), listener=self._listener.name,
                                       tls=self._listener.tls == "implicit",
                                       auth_required=self._listener.auth == "required",
                                       feedback=self._listener.role == "feedback")
            try:
                self._acceptance.connect(self._state)
            except RelayError as exc:
                self._refused = True
                refused(self._state, "CONNECT", exc.reply, exc.detail)
                metrics.SMTP_REPLIES.labels("CONNECT", str(exc.reply.code)).inc()
                transport.write(f"{exc.reply}\r\n".encode())
                transport.close()
                return
            self._sessions.add(self)
        else:                                             # RFC 3207 §4.2: forget the session
            self._state.tls = True
            self._state.helo = ""
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """The idle timeout (`server.timeout`) runs from the last command, and during DATA
        from the last bytes received: a message still coming is not idle, however long it
        takes (RFC 5321 §4.5.3.2.5 times each data block, not the whole message)."""
        if self._in_data:
            self._reset_timeout()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if not self._closed_once:
            self._closed_once = True
            self._sessions.discard(self)
            self._acceptance.disconnect(self._state)
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        """Every reply leaves through here: aiosmtpd's own lines become relay's named replies
        or get an enhanced status code (RFC 2034: every 2xx/4xx/5xx but the greeting and the
        HELO/EHLO answers), what a reply repeats of the client's input is made printable,
        a multi-line reply is written in one piece, and nothing is written to a session
        relay has closed."""
        if self._hung_up():             # nothing more to say (a closing TLS transport raises)
            return
        if isinstance(status, str):
            for prefix, reply in _LIBRARY_REPLIES:
                if status.startswith(prefix):
                    reply = reply.format(limit=self._max_size)
                    refused(self._state, self._command, reply)
                    status = str(reply)
                    break
            else:
                if self._greeted and not self._in_hello:
                    status = with_enhanced_code(status)
            status = printable(status)
            if status[3:4] == "-":                   # more lines follow: write them together
                self._continued.append(status)
                return
            if self._continued:
                status = "\r\n".join(self._continued + [status])
                self._continued.clear()
        code = status[:3].decode("ascii", "replace") if isinstance(status, bytes) else status[:3]
        if code.isdigit():                           # bytes: aiosmtpd's AUTH 334 challenges
            metrics.SMTP_REPLIES.labels(self._command, code).inc()
        if not self._greeted:
            self._greeted = True
            self._command = "OTHER"                  # the greeting was CONNECT's
        await super().push(status)

    def _hung_up(self) -> bool:
        """relay closed this session (aiosmtpd's goodbye after too many unknown commands)
        while commands the client pipelined are still buffered."""
        return self.transport is None or self.transport.is_closing()

    @syntax("EHLO hostname")                # (HELP reads these marks)
    async def smtp_EHLO(self, hostname: str):
        self.command_size_limits.clear()    # aiosmtpd adds MAIL's extra octets at each EHLO
        self._in_hello = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_hello = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str):
        self._in_hello = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_hello = False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207 §4.2: once TLS is on, STARTTLS is no longer offered, nor taken (aiosmtpd
        would answer 220 and wait for a second handshake inside the first)."""
        if self.tls_context is not None and self._state.tls:
            await self.push(str(replies.R503_TLS_ACTIVE))
            return
        await super().smtp_STARTTLS(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing, without the class it defines on every call. An address
        holding bytes that are not UTF-8 (aiosmtpd keeps them as surrogate escapes) is
        malformed, SMTPUTF8 or not (RFC 6531 §3.3): 553 5.1.3, as no mailbox can have it.
        So is one the email package's parser fails on in its own way (a lone "<" raises
        IndexError, "x@[" AttributeError): never an internal error."""
        if not arg:
            return "", ""
        if arg.lstrip().startswith("<>"):                 # the null reverse-path (DSNs)
            return "<>", arg.lstrip()[2:]
        simple = simple_address(arg)
        if simple is not None:
            return simple
        try:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            address, rest = parse(arg)
            address.addr_spec.encode("utf-8")
        except Exception:               # HeaderParseError, UnicodeEncodeError, and the above
            return None, None
        return address.addr_spec, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA read in large chunks rather than line by line (aiosmtpd's way costs a Python
        loop turn per line: most of the CPU of a 100 KB message). The end is the first
        `.` line (RFC 5321 §4.1.1.4); past `data_size_limit` the data is read and dropped,
        then refused with 552 5.3.4."""
        if await self.check_helo_needed():
            return
        if not self.envelope.rcpt_tos:
            await self.push(str(replies.R503_NEED_RCPT))
            return
        if arg:
            await self.push(str(replies.R501_DATA_SYNTAX))
            return
        await self.push(str(replies.R354_START_DATA))
        self._in_data = True
        try:
            data = await self._read_data()
        finally:
            self._in_data = False
        if data is None:
            reply = replies.R552_TOO_BIG.format(limit=self._max_size)
            refused(self._state, "DATA", reply, "message too big")
            await self.push(str(reply))
        else:
            self.envelope.content = self.envelope.original_content = data
            status = await self._call_handler_hook("DATA")
            await self.push(status)
        self._set_post_data_state()

    async def _read_data(self) -> bytes | None:
        buffer = bytearray()
        dropped = 0
        limit = self.data_size_limit or 0
        while True:
            try:
                buffer += await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                buffer += await self._reader.readexactly(exc.consumed)
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("client disconnected during DATA") from None
            if buffer == b".\r\n" or buffer.endswith(b"\r\n.\r\n"):
                break
            if limit and dropped + len(buffer) > limit + 3:
                dropped += len(buffer) - 4
                del buffer[:-4]                     # keep what the end marker may span
        if limit and dropped + len(buffer) - 3 > limit:
            return None
        # RFC 5321 §4.5.2: a line starting with "." lost its first character.
        data = bytes(buffer[:-3]).replace(b"\r\n.", b"\r\n")
        return data[1:] if data.startswith(b".") else data

    @property
    def in_transaction(self) -> bool:
        return bool(self.envelope and self.envelope.mail_from)

    def shut(self, reply: Reply = replies.R421_SHUTTING_DOWN) -> None:
        """Close this session now with `reply` (a 421: when draining, or idle too long)."""
        if self.transport is not None and not self.transport.is_closing():
            metrics.SMTP_REPLIES.labels(self._command, str(reply.code)).inc()
            self.transport.write(f"{reply}\r\n".encode())
            self.transport.close()

    def _timeout_cb(self) -> None:
        """Idle for `server.timeout`: 421 4.4.2, then closed (aiosmtpd closes without a word,
        and the client is left to guess why; RFC 5321 §3.8 has the server say 421)."""
        self.shut(replies.R421_TIMEOUT)


class Listeners:
    """Starts the configured listeners and drains them on shutdown."""

    def __init__(self, config: Config, acceptance: Acceptance,
                 tls_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.acceptance = acceptance
        self.handler = Handler(acceptance)
        self.tls_context = tls_context
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.sessions: set[RelaySMTP] = set()

    def reconfigure(self, config: Config, tls_context: ssl.SSLContext | None) -> None:
        """A reload: new sessions get the new limits and STARTTLS certificate (the listening
        sockets, and implicit TLS's certificate, stay until the next restart)."""
        self.config = config
        self.tls_context = tls_context

    def _factory(self, listener: Listener):
        starttls = listener.tls == "starttls"

        def make() -> RelaySMTP:
            server = self.config.server
            return RelaySMTP(
                self.handler, self.acceptance, listener, self.sessions, server.max_message_size,
                hostname=server.hostname, data_size_limit=server.max_message_size,
                enable_SMTPUTF8=True, tls_context=self.tls_context if starttls else None,
                require_starttls=starttls, auth_required=False,  # acceptance decides (530)
                auth_require_tls=listener.tls != "implicit", timeout=server.timeout,
                ident="relay", loop=asyncio.get_running_loop())
        return make

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.config.server.listeners:
            implicit = self.tls_context if listener.tls == "implicit" else None
            self.servers[listener.name] = await loop.create_server(
                self._factory(listener), listener.address, listener.port, ssl=implicit,
                backlog=512, reuse_address=True)
            if listener.tls == "none" and not _is_loopback(listener.address):
                log.warning("listener %s has tls: none on %s, which is not loopback: "
                            "credentials and mail cross the network in clear",
                            listener.name, listener.address)
            log.info("listening on %s:%d (%s, tls %s)", listener.address, self.port(listener.name),
                     listener.name, listener.tls)

    def port(self, name: str) -> int:
        return self.servers[name].sockets[0].getsockname()[1]

    async def check(self) -> None:
        """Raise unless every listener started is accepting connections (/readyz)."""
        if not self.servers:
            raise RuntimeError("no listener started")
        down = [name for name, server in self.servers.items() if not server.is_serving()]
        if down:
            raise RuntimeError("not listening: " + ", ".join(down))

    async def drain(self, timeout: float) -> None:
        """Stop accepting; close idle sessions; give open transactions `timeout` to finish."""
        for server in self.servers.values():
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions and loop.time() < deadline:
            for session in list(self.sessions):
                if not session.in_transaction:
                    session.shut()
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.shut()
        for server in self.servers.values():
            await server.wait_closed()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"

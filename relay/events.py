"""The message event log: one line per thing that happens to a message, and the log format.

Events go to the `relay.events` logger, so operators route them like any log (stderr by
default). The kinds form a closed set; fields are flat (queue id, domain, route, reply, ...)
and never hold message content. `configure` sets the format of the whole log:

- `text` (the default), for a terminal:
  `2026-11-22 18:00:01,123 INFO relay.events: queued id=01JD... domain=acme.fr route=brevo ...`
- `json` (`logging.format: json`), one object per line for journald, Docker and shippers:
  `{"time":"2026-11-22T18:00:01.123Z","level":"info","logger":"relay.events","event":"queued",
  "id":"01JD...","domain":"acme.fr","route":"brevo",...}`; other log lines carry `msg`.
"""
from __future__ import annotations

import asyncio
import enum
import json
import logging
import sys
import time
from collections import deque

log = logging.getLogger("relay.events")


class Event(enum.StrEnum):
    RECEIVED = "received"           # DATA ended: a message arrived (before its checks)
    REJECTED = "rejected"           # a connection, command or message was refused
    QUEUED = "queued"               # stored in the spool: the 250 was sent
    ATTEMPT = "attempt"             # the route is being given the message
    DELIVERED = "delivered"         # per recipient, as the route answered
    DEFERRED = "deferred"           # per recipient (4xx), or by the governor (`by`)
    BOUNCED = "bounced"             # per recipient (5xx)
    EXPIRED = "expired"             # per recipient, past spool.max_age
    DSN_SENT = "dsn_sent"
    DELETED = "deleted"             # by an operator (`by`), without a DSN
    RETRIED = "retried"             # an operator made a queued message due now (`by`)
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"   # an operator removed a suppression (`by`)
    COMPLAINED = "complained"
    PAUSED = "paused"
    RESUMED = "resumed"
    BLOCKLIST_LISTED = "blocklist_listed"      # a watched IP or domain appeared in a zone
    BLOCKLIST_CLEARED = "blocklist_cleared"    # ... and is no longer listed there
    BLOCKLIST_REFUSED = "blocklist_refused"    # a zone answers our queries with error codes
    DMARC_REPORT = "dmarc_report"              # an aggregate report was stored


def emit(event: Event, **fields: object) -> None:
    fields = {k: v for k, v in fields.items() if v is not None}
    RECENT.add(time.time(), event.value, fields)
    if log.isEnabledFor(logging.INFO):
        log.info(_readable(event.value, fields), extra={"relay_event": (event.value, fields)})


Entry = tuple[float, str, dict]          # (Unix time, event kind, its fields)


class Recent:
    """This process's last `size` events, for the web console's event page. The delivery
    process sends its new ones to the listener process with its metrics
    (`outbound/process.py`), so the listener's holds both. Appends only: one deque append
    per event, and the deque forgets the oldest."""

    def __init__(self, size: int = 5000) -> None:
        self._entries: deque[Entry] = deque(maxlen=size)
        self.added = 0                   # how many were ever added: a cursor for `newer_than`

    def add(self, at: float, kind: str, fields: dict) -> None:
        self._entries.append((at, kind, fields))
        self.added += 1

    def extend(self, entries: list[Entry]) -> None:
        for at, kind, fields in entries:
            self.add(float(at), str(kind), dict(fields))

    def newer_than(self, cursor: int) -> list[Entry]:
        """The entries added after the first `cursor` (those still kept)."""
        count = min(self.added - cursor, len(self._entries))
        return list(self._entries)[len(self._entries) - count:] if count > 0 else []

    def latest(self, limit: int, kind: str = "", domain: str = "") -> list[Entry]:
        """The newest first, of that kind and domain when given."""
        found = []
        for entry in reversed(self._entries):
            if (not kind or entry[1] == kind) and (not domain or entry[2].get("domain") == domain):
                found.append(entry)
                if len(found) == limit:
                    break
        return found


RECENT = Recent()


def _readable(event: str, fields: dict) -> str:
    """`queued id=X reply="250 2.0.0 Ok"`: logfmt, quoted where a value needs it."""
    parts = [event]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            text = _escape(json.dumps(text, ensure_ascii=False))
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _escape(quoted: str) -> str:
    """What json.dumps leaves raw but is not printable (DEL, C1 controls, U+2028, a bidi
    override: from a client's command or a provider's reply) becomes a \\u escape, so a
    value can neither break a log line nor reverse how it displays."""
    if quoted.isprintable():
        return quoted
    return "".join(c if c.isprintable() else
                   f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in quoted)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _iso(record.created), "level": record.levelname.lower(),
                "logger": record.name}
        event = getattr(record, "relay_event", None)
        if event is not None:
            line["event"] = event[0]
            line.update(event[1])
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # ASCII only: no raw control or line-separator character can split or garble a line
        return json.dumps(line, separators=(",", ":"), default=str)


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TurnHandler(logging.StreamHandler):
    """A stream handler that writes the lines logged during one turn of the event loop
    together, at the end of that turn, in one write: under load a turn answers many sessions,
    and a write per line (two or three per message) cost the listener and delivery processes
    a system call each, and a wait for the GIL after it. Lines from other threads, or with no
    loop running, are written at once; `flush` (logging's shutdown at exit) writes what is
    waiting."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:
            if loop is not None and not self._waiting:
                loop.call_soon(self.flush)
            self._waiting.append(line)
        if loop is None:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self._waiting:
                return
            text = "".join(self._waiting)
            self._waiting.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:                   # a closed or full stderr must not stop relay
                pass


_verbose = False


def configure(format: str = "text", level: str = "info", verbose: bool | None = None) -> None:
    """Send the whole log to stderr in `format` ("text" or "json"); `verbose` means debug
    (None: as the last call said, so a reload keeps `relay serve -v`)."""
    global _verbose
    verbose = _verbose = _verbose if verbose is None else verbose
    handler = TurnHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, level.upper()),
                        handlers=[handler], force=True)
    # neither format prints where a line was logged from, nor the process or thread: not
    # looking them up (the logging HOWTO's "Optimization") makes a line 26 -> 18 us, and
    # there are four event lines a message between the two processes
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False

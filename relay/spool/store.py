"""The spool: accepted messages and their per-recipient state in one SQLite database (WAL).

Owns durability. `enqueue` returns only after the message and its recipients are committed
with `synchronous=FULL` (the WAL is fsynced), which is what makes `250 queued` a promise.
Writes go through one writer thread that commits whatever is waiting in one transaction
(group commit): under load, many sessions share one fsync instead of paying one each.
Each write runs in its own savepoint, so one failing write never takes the others down.
Reads run on a small pool of reader threads; WAL lets them proceed during writes.

A message row is deleted once every recipient has a final state; the event log keeps the
history. `next_attempt` orders delivery; `stream` puts transactional mail before bulk mail.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from relay.model import QueuedMessage, Recipient, RecipientState, Stream
from relay.state import sqlite as state
from relay.state import suppressions
from relay.spool import space

log = logging.getLogger("relay.spool")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    mail_from TEXT NOT NULL,
    domain TEXT NOT NULL,
    route TEXT NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    mail_options TEXT NOT NULL DEFAULT '[]',
    body BLOB NOT NULL,
    held REAL NOT NULL DEFAULT 0,
    hold_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (stream, next_attempt);
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    reply TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""

_STOP = object()


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass(frozen=True, slots=True)
class Due:
    id: str
    route: str
    stream: Stream


@dataclass(frozen=True, slots=True)
class Summary:
    id: str
    created: float
    mail_from: str
    domain: str
    route: str
    attempts: int
    next_attempt: float
    pending: int
    size: int


class _Writer(threading.Thread):
    """The one thread that writes: drains the request queue into one transaction per batch."""

    def __init__(self, path: Path, max_batch: int = 512) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self._conn = connect(path)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._max_batch = max_batch

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests.put((fn, future, loop))
        return future

    def stop(self) -> None:
        self._requests.put(_STOP)
        self.join()
        self._conn.close()

    def run(self) -> None:
        while True:
            first = self._requests.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._requests.put(_STOP)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        results: list[tuple[bool, object]] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in batch:
                conn.execute("SAVEPOINT one")
                try:
                    results.append((True, fn(conn)))
                    conn.execute("RELEASE one")
                except Exception as exc:       # the request's own failure: undo just it
                    conn.execute("ROLLBACK TO one")
                    conn.execute("RELEASE one")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:               # the commit itself failed: nothing is durable
            log.error("spool commit failed: %s", exc)
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:                  # the writer must survive to answer the next batch
                log.exception("spool rollback failed")
            results = [(False, exc)] * len(batch)
        for (ok, value), (_, future, loop) in zip(results, batch):
            try:
                loop.call_soon_threadsafe(_resolve, future, ok, value)
            except RuntimeError:               # that caller's loop is closed: nobody waits
                pass


def _resolve(future: asyncio.Future, ok: bool, value: object) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)  # type: ignore[arg-type]


class Spool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "relay.sqlite3"
        with connect(self.path) as conn:
            conn.executescript(SCHEMA)
            conn.executescript(state.SCHEMA)
            conn.executescript(suppressions.SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if "held" not in columns:              # a spool written before the governor
                conn.execute("ALTER TABLE messages ADD COLUMN held REAL NOT NULL DEFAULT 0")
            if "hold_reason" not in columns:       # ... or before the queue metrics
                conn.execute("ALTER TABLE messages ADD COLUMN hold_reason TEXT NOT NULL DEFAULT ''")
            conn.execute("CREATE INDEX IF NOT EXISTS messages_paused ON messages (domain)"
                         " WHERE hold_reason = 'paused'")    # release_held, without a scan
            columns = {row[1] for row in conn.execute("PRAGMA table_info(feedback_events)")}
            if "received" not in columns:
                conn.execute("ALTER TABLE feedback_events ADD COLUMN received REAL NOT NULL DEFAULT 0")
        self._writer = _Writer(self.path)
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-reader")
        self._started = False

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._writer.start()
            self._started = True

    def close(self) -> None:
        if self._started:
            self._writer.stop()
            self._started = False
        self._readers.shutdown(wait=True)

    # --- async API used by the pipelines -------------------------------------------
    async def enqueue(self, *messages: QueuedMessage,
                      campaign: tuple[str, int, int] | None = None,
                      message_id: str | None = None) -> None:
        """Durably store new messages (the copies of one submission), with the submission's
        count toward its campaign (campaign, bucket, recipients); returns once committed."""
        def write(conn: sqlite3.Connection) -> None:
            for message in messages:
                _insert(conn, message)
            if campaign is not None:
                state.count_campaign(conn, *campaign)
            if message_id:
                state.remember_message_id(conn, message_id, messages[0].domain, messages[0].created)
        await self._writer.submit(write)

    def campaigns_now(self, since_bucket: int) -> dict[str, list[tuple[int, int]]]:
        """The live campaign counts, for the acceptance side at start."""
        with connect(self.path) as conn:
            return state.campaign_buckets(conn, since_bucket)

    async def due(self, now: float, limit: int) -> list[Due]:
        """Messages whose next attempt is due, transactional first, oldest first."""
        return await self._read(lambda conn: [
            Due(id, route, Stream(stream)) for id, route, stream in conn.execute(
                "SELECT id, route, stream FROM messages WHERE stream = 0 AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?", (now, limit)).fetchall()
            + conn.execute(
                "SELECT id, route, stream FROM messages WHERE stream = 1 AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?", (now, limit)).fetchall()][:limit])

    async def next_due_time(self) -> float | None:
        # per stream, so each MIN is one step down the (stream, next_attempt) index; a plain
        # MIN(next_attempt) reads the whole index: milliseconds per wake-up with a backlog
        return await self._read(lambda conn: conn.execute(
            "SELECT MIN(m) FROM (SELECT MIN(next_attempt) AS m FROM messages WHERE stream = 0"
            " UNION ALL SELECT MIN(next_attempt) FROM messages WHERE stream = 1)").fetchone()[0])

    async def load(self, message_id: str) -> QueuedMessage | None:
        return await self._read(lambda conn: _select(conn, message_id))

    async def record_attempt(self, message: QueuedMessage,
                             also_enqueue: list[QueuedMessage] = (), delivered: int = 0,
                             now: float = 0.0, hold_reason: str = "") -> None:
        """Persist the outcome of an attempt, the DSNs it produced and the deliveries it adds
        to the domain's daily volume, in one transaction. `hold_reason`: the recipients the
        governor did not grant are held until `next_attempt`, for that reason."""
        def write(conn: sqlite3.Connection) -> None:
            _update(conn, message, hold_reason)
            for extra in also_enqueue:
                _insert(conn, extra)
            if delivered:
                state.add_deliveries(conn, message.domain, delivered, now)
        await self._writer.submit(write)

    async def record_hold(self, message: QueuedMessage, reason: str) -> None:
        """The governor holds the message until `next_attempt`, for `reason`: not an attempt."""
        await self._writer.submit(lambda conn: conn.execute(
            "UPDATE messages SET next_attempt = ?, held = ?, hold_reason = ? WHERE id = ?",
            (message.next_attempt, message.held, reason, message.id)))

    async def governance_state(self, since_day: int):
        return await self._read(lambda conn: state.load(conn, since_day))

    async def suppression(self, recipient: str, domain: str) -> "suppressions.SuppressionReason | None":
        return await self._read(lambda conn: suppressions.lookup(conn, recipient, domain))

    async def suppress(self, recipient: str, domain: str, reason: "suppressions.SuppressionReason",
                       now: float) -> bool:
        return await self._writer.submit(
            lambda conn: suppressions.suppress(conn, recipient, domain, reason, now))

    async def paused_domains(self) -> dict[str, str]:
        return await self._read(state.paused)

    # --- synchronous, for the CLI -------------------------------------------------------
    def governance_state_now(self, since_day: int):
        with connect(self.path) as conn:
            return state.load(conn, since_day), state.paused(conn)

    def pause(self, domain: str, reason: str, now: float) -> None:
        with connect(self.path) as conn:
            state.pause(conn, domain, reason, now)

    def resume(self, domain: str, now: float) -> bool:
        with connect(self.path) as conn:
            return state.resume(conn, domain, now)

    def suppressions(self, action: str, recipient: str = "", domain: str = "",
                     now: float = 0.0):
        """`relay suppressions`: list (optionally of one domain), add (manual), remove."""
        with connect(self.path) as conn:
            if action == "list":
                return suppressions.entries(conn, domain or None)
            if action == "add":
                return suppressions.suppress(conn, recipient, domain,
                                             suppressions.SuppressionReason.MANUAL, now)
            return suppressions.remove(conn, recipient, domain)

    def rates(self, domain: str, now: float, window: float) -> tuple[int, int, int]:
        """(delivered, complaints, hard bounces) of `domain` over the window."""
        with connect(self.path) as conn:
            since = now - window
            return (state.delivered_since(conn, domain, since),
                    state.count_feedback(conn, domain, ("complained",), since),
                    state.count_feedback(conn, domain, ("bounced_hard",), since))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a reader connection (for state kept beside the spool)."""
        return await self._read(fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the writer's next transaction (for state kept beside the spool)."""
        return await self._writer.submit(fn)

    async def free_bytes(self) -> int:
        """What the spool can still write (`spool/space.py`)."""
        return await self._read(lambda conn: space.free_bytes(conn, self.path.parent))

    # --- readiness (/readyz) ------------------------------------------------------------
    async def check_writable(self) -> None:
        """Raise unless a write commits, through the writer thread, as an enqueue would."""
        if not self._started or not self._writer.is_alive():
            raise RuntimeError("the spool writer is not running")
        try:
            await self._writer.submit(lambda conn: conn.execute(
                "INSERT OR REPLACE INTO health (id, at) VALUES (1, strftime('%s', 'now'))"))
        except sqlite3.Error as exc:
            raise RuntimeError(f"spool not writable: {exc}") from None

    async def check_state(self) -> None:
        """Raise unless the governance state answers a read."""
        try:
            await self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM domain_state").fetchone())
        except sqlite3.Error as exc:
            raise RuntimeError(f"state not readable: {exc}") from None

    # --- synchronous API for the CLI (its own connection) ---------------------------
    def summaries(self) -> list[Summary]:
        with connect(self.path) as conn:
            rows = conn.execute(
                "SELECT m.id, m.created, m.mail_from, m.domain, m.route, m.attempts,"
                " m.next_attempt, (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id"
                " AND r.state = 'queued'), length(m.body) FROM messages m"
                " ORDER BY m.created").fetchall()
        return [Summary(*row) for row in rows]

    def get(self, message_id: str) -> QueuedMessage | None:
        with connect(self.path) as conn:
            return _select(conn, message_id)

    def retry_now(self, message_id: str, now: float | None = None) -> bool:
        """Due at once; a governor hold it cuts short gives its unused time back (held time
        never counts toward max_age, and this much of it will not be)."""
        now = time.time() if now is None else now
        with connect(self.path) as conn:
            return conn.execute(
                "UPDATE messages SET held = CASE WHEN hold_reason != '' THEN"
                " MAX(0, held - MAX(0, next_attempt - ?1)) ELSE held END,"
                " next_attempt = 0, hold_reason = '' WHERE id = ?2", (now, message_id)).rowcount > 0

    def delete(self, message_id: str) -> bool:
        with connect(self.path) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM recipients WHERE message_id = ?", (message_id,))
            found = conn.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount
            conn.execute("COMMIT")
            return found > 0

    # --- internals -----------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._with_reader, fn)

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return fn(conn)


def _insert(conn: sqlite3.Connection, m: QueuedMessage) -> None:
    conn.execute(
        "INSERT INTO messages (id, created, mail_from, domain, route, stream, attempts,"
        " next_attempt, mail_options, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (m.id, m.created, m.mail_from, m.domain, m.route, int(m.stream), m.attempts,
         m.next_attempt, json.dumps(m.mail_options), m.body))
    conn.executemany(
        "INSERT INTO recipients (message_id, idx, address, state, reply) VALUES (?, ?, ?, ?, ?)",
        [(m.id, i, r.address, r.state.value, r.reply) for i, r in enumerate(m.recipients)])


def _update(conn: sqlite3.Connection, m: QueuedMessage, hold_reason: str = "") -> None:
    if not m.pending():
        conn.execute("DELETE FROM recipients WHERE message_id = ?", (m.id,))
        conn.execute("DELETE FROM messages WHERE id = ?", (m.id,))
        return
    conn.execute("UPDATE messages SET attempts = ?, next_attempt = ?, held = ?, hold_reason = ?"
                 " WHERE id = ?", (m.attempts, m.next_attempt, m.held, hold_reason, m.id))
    conn.executemany("UPDATE recipients SET state = ?, reply = ? WHERE message_id = ? AND idx = ?",
                     [(r.state.value, r.reply, m.id, i) for i, r in enumerate(m.recipients)])


def _select(conn: sqlite3.Connection, message_id: str) -> QueuedMessage | None:
    row = conn.execute(
        "SELECT id, created, mail_from, domain, route, stream, attempts, next_attempt,"
        " mail_options, body, held FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        return None
    recipients = [Recipient(address, RecipientState(state), reply) for address, state, reply in
                  conn.execute("SELECT address, state, reply FROM recipients WHERE message_id = ?"
                               " ORDER BY idx", (message_id,))]
    id_, created, mail_from, domain, route, stream, attempts, next_attempt, options, body, held = row
    return QueuedMessage(id=id_, mail_from=mail_from, recipients=recipients, domain=domain,
                         route=route, body=bytes(body), created=created, attempts=attempts,
                         next_attempt=next_attempt, stream=Stream(stream),
                         mail_options=json.loads(options), held=held)

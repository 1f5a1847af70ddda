"""The spool: accepted messages and their per-recipient state, and nothing else (the
governance state is `relay/state/`'s, in the same database when it is the embedded one).

Owns what "queued" means. `enqueue` returns only after the message and its recipients are
committed with `synchronous=FULL` (the WAL is fsynced), which is what makes `250 queued` a
promise; the database and its group-commit writer are `db.py`'s.

A message row is deleted once every recipient has a final state; the event log keeps the
history. `next_attempt` orders delivery; `stream` puts transactional mail before bulk mail.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable

from relay.model import QueuedMessage, Recipient, RecipientState, Stream
from relay.spool import space
from relay.spool.db import Database, connect

log = logging.getLogger("relay.spool")

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
CREATE INDEX IF NOT EXISTS messages_created ON messages (created, id);
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
    hold_reason: str = ""         # why the governor holds it ("" when it does not)


# `summaries(state=...)`: the states of `relay_queue_messages` (spool/gauges.py), at time ?.
_STATES = {
    "ready": "m.next_attempt <= ?",
    "held": "(m.next_attempt > ? AND m.hold_reason != '')",
    "deferred": "(m.next_attempt > ? AND m.hold_reason = '')",
}


class Spool:
    def __init__(self, directory: Path, db: Database | None = None) -> None:
        self.db = db or Database(directory / "relay.sqlite3")
        self.path = self.db.path
        with connect(self.path) as conn:
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if "held" not in columns:              # a spool written before the governor
                conn.execute("ALTER TABLE messages ADD COLUMN held REAL NOT NULL DEFAULT 0")
            if "hold_reason" not in columns:       # ... or before the queue metrics
                conn.execute("ALTER TABLE messages ADD COLUMN hold_reason TEXT NOT NULL DEFAULT ''")
            conn.execute("CREATE INDEX IF NOT EXISTS messages_paused ON messages (domain)"
                         " WHERE hold_reason = 'paused'")    # release_held, without a scan

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.db.start()

    def close(self) -> None:
        self.db.close()

    # --- async API used by the pipelines -------------------------------------------
    async def enqueue(self, *messages: QueuedMessage) -> None:
        """Durably store new messages (the copies of one submission); returns once committed."""
        def write(conn: sqlite3.Connection) -> None:
            for message in messages:
                _insert(conn, message)
        await self.db.write(write)

    async def due(self, now: float, limit: int) -> list[Due]:
        """Messages whose next attempt is due, transactional first, oldest first."""
        return await self.db.read(lambda conn: [
            Due(id, route, Stream(stream)) for id, route, stream in conn.execute(
                "SELECT id, route, stream FROM messages WHERE stream = 0 AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?", (now, limit)).fetchall()
            + conn.execute(
                "SELECT id, route, stream FROM messages WHERE stream = 1 AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?", (now, limit)).fetchall()][:limit])

    async def next_due_time(self) -> float | None:
        # per stream, so each MIN is one step down the (stream, next_attempt) index; a plain
        # MIN(next_attempt) reads the whole index: milliseconds per wake-up with a backlog
        return await self.db.read(lambda conn: conn.execute(
            "SELECT MIN(m) FROM (SELECT MIN(next_attempt) AS m FROM messages WHERE stream = 0"
            " UNION ALL SELECT MIN(next_attempt) FROM messages WHERE stream = 1)").fetchone()[0])

    async def load(self, message_id: str) -> QueuedMessage | None:
        return await self.db.read(lambda conn: _select(conn, message_id))

    def record_attempt(self, message: QueuedMessage, also_enqueue: list[QueuedMessage] = (),
                       hold_reason: str = "") -> Awaitable[None]:
        """Persist the outcome of an attempt and the DSNs it produced, in one transaction,
        submitted at once (durable when the awaitable resolves). `hold_reason`: the
        recipients the governor did not grant are held until `next_attempt`, for that
        reason."""
        def write(conn: sqlite3.Connection) -> None:
            _update(conn, message, hold_reason)
            for extra in also_enqueue:
                _insert(conn, extra)
        return self.db.submit(write)

    async def record_hold(self, message: QueuedMessage, reason: str) -> None:
        """The governor holds the message until `next_attempt`, for `reason`: not an attempt."""
        await self.db.write(lambda conn: conn.execute(
            "UPDATE messages SET next_attempt = ?, held = ?, hold_reason = ? WHERE id = ?",
            (message.next_attempt, message.held, reason, message.id)))

    async def release_held(self, now: float, paused: dict[str, tuple[str, str]],
                           domain: str | None = None) -> int:
        """Make the mail held by a pause due now: of `domain`, or of every domain, except where
        `paused` (domain -> (scope, reason)) still holds all of it; how many messages. The
        hold ends early, so the time it will not last is taken back from the message's
        `held` time (which never counts toward max_age)."""
        def write(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id, domain FROM messages WHERE hold_reason = 'paused'"
                                " AND next_attempt > ?" + (" AND domain = ?" if domain else ""),
                                (now, domain) if domain else (now,)).fetchall()
            ids = [(now, id_) for id_, d in rows if paused.get(d, ("",))[0] != "all"]
            conn.executemany("UPDATE messages SET held = MAX(0, held - (next_attempt - ?1)),"
                             " next_attempt = ?1, hold_reason = '' WHERE id = ?2", ids)
            return len(ids)
        return await self.db.write(write)

    async def release_rate_holds(self, domain: str, now: float) -> int:
        """Make the domain's mail held by a rate due now (to be given fresh slots), giving
        back the hold time it will not use; how many messages."""
        return await self.db.write(lambda conn: conn.execute(
            "UPDATE messages SET held = MAX(0, held - (next_attempt - ?1)), next_attempt = ?1,"
            " hold_reason = '' WHERE domain = ?2 AND hold_reason IN ('rate', 'bulk_pacing')"
            " AND next_attempt > ?1", (now, domain)).rowcount)

    async def free_bytes(self) -> int:
        """What the spool can still write (`spool/space.py`)."""
        return await self.db.read(lambda conn: space.free_bytes(conn, self.path.parent))

    # --- readiness (/readyz) ------------------------------------------------------------
    async def check_writable(self) -> None:
        """Raise unless a write commits, through the writer thread, as an enqueue would."""
        if not self.db.writing:
            raise RuntimeError("the spool writer is not running")
        try:
            await self.db.write(lambda conn: conn.execute(
                "INSERT OR REPLACE INTO health (id, at) VALUES (1, strftime('%s', 'now'))"))
        except sqlite3.Error as exc:
            raise RuntimeError(f"spool not writable: {exc}") from None

    # --- synchronous API for the CLI (its own connection) ---------------------------
    def summaries(self, limit: int | None = None, after: str | None = None,
                  domain: str | None = None, state: str | None = None,
                  recipient: str | None = None, now: float | None = None) -> list[Summary]:
        """The queue in the order it arrived: the first `limit` messages (all when None)
        after the message `after`, of `domain`, in `state` (ready: due now; held: by the
        governor; deferred: waiting to retry; as `relay_queue_messages` counts them) and with
        a pending `recipient`, when given. A page walks the arrival index and stops at
        `limit` rows, however long the queue."""
        where, args = ["1"], []
        if after is not None:
            where.append("(m.created, m.id) > (SELECT created, id FROM messages WHERE id = ?)")
            args.append(after)
        if domain is not None:
            where.append("m.domain = ?")
            args.append(domain.lower())
        if state is not None:
            where.append(_STATES[state])
            args.append(time.time() if now is None else now)
        if recipient is not None:
            where.append("EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id"
                         " AND r.address = ? AND r.state = 'queued')")
            args.append(recipient.strip())
        sql = ("SELECT m.id, m.created, m.mail_from, m.domain, m.route, m.attempts,"
               " m.next_attempt, (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id"
               " AND r.state = 'queued'), length(m.body), m.hold_reason FROM messages m"
               f" WHERE {' AND '.join(where)} ORDER BY m.created, m.id")
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with connect(self.path) as conn:
            return [Summary(*row) for row in conn.execute(sql, args).fetchall()]

    def get_created(self, message_id: str) -> float | None:
        with connect(self.path) as conn:
            row = conn.execute("SELECT created FROM messages WHERE id = ?", (message_id,)).fetchone()
        return row[0] if row else None

    def count(self, domain: str | None = None) -> int:
        with connect(self.path) as conn:
            if domain is None:
                return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM messages WHERE domain = ?",
                                (domain.lower(),)).fetchone()[0]

    def queued_by_domain(self) -> dict[str, tuple[int, float | None]]:
        """domain -> (messages queued, when the earliest held one is due again)."""
        with connect(self.path) as conn:
            return {d: (n, due) for d, n, due in conn.execute(
                "SELECT domain, COUNT(*), MIN(CASE WHEN hold_reason != '' THEN next_attempt END)"
                " FROM messages GROUP BY domain")}

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

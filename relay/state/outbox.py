"""A fleet node's outbox (`state.backend: redis`): the shared-state writes Redis did not
take while it was unreachable (acceptance counts, feedback, suppressions), kept in the node's
spool database so they survive a restart of the node, and replayed in order once Redis
answers again.

Every process of the node (listener, delivery, a CLI command) may add to it; only the
listener replays it (`RedisState.heartbeat`), so an entry is never replayed by two processes
at once. An entry is deleted after Redis took it: a crash between the two replays it once
more, which the kinds allow (feedback counts once by its dedupe key, a suppression is set
if absent; an acceptance count may count twice, it only feeds mass-send detection).
"""
from __future__ import annotations

import json
import sqlite3

from relay.spool.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS state_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.now(lambda conn: conn.executescript(SCHEMA))

    async def add(self, kind: str, body: dict) -> None:
        """Kept once this returns (committed with the spool's next group commit)."""
        text = json.dumps(body)
        await self.db.write(lambda conn: conn.execute(
            "INSERT INTO state_outbox (kind, body) VALUES (?, ?)", (kind, text)))

    async def oldest(self, limit: int = 500) -> list[tuple[int, str, dict]]:
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT id, kind, body FROM state_outbox ORDER BY id LIMIT ?", (limit,)).fetchall())
        return [(id_, kind, json.loads(body)) for id_, kind, body in rows]

    async def done(self, id_: int) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM state_outbox WHERE id = ?",
                                                      (id_,)))

    async def size(self) -> int:
        return await self.db.read(_count)


def _count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM state_outbox").fetchone()[0]

"""The listener's copy of the suppression list, so that most RCPT TO need no database read.

Every RCPT TO asks whether its recipient is suppressed for the sender's domain. A read of
SQLite on the event loop costs little CPU but lets go of the GIL twice, and under load the
loop then waited ~0.4 ms a lookup for the threads that took it (measured: 65 us of CPU,
400 us of wall time); a hop to a reader thread costs more. Yet nearly every recipient is
not suppressed. So the listener keeps a sorted array of a 64-bit hash of each suppressed
(recipient, domain) pair (8 bytes a suppression: 8 MB for a million): a pair whose hash is
not there is not suppressed, and only the others are read from the database.

The copy is exact, not "recent": the suppressions table's change counter (`changes.py`)
moves inside each writing transaction, in any process (a feedback report, a bounce in the
delivery process, `relay suppressions add`, the console). While it has not moved since the
copy was made, the copy is the table; once it has, every lookup reads the database until a
new copy is made (in a reader thread, after waiting once for the write lock to be free, so
that every change counted before it is committed and seen). Copies are made one at a time,
and after one that took T seconds (its read, not its wait for the lock) the next waits 10 T:
a list changing all the time, or a very long one, costs at most a tenth of a thread, and
lookups read the database as before meanwhile. (While a copy of a million is made, its
list of hashes takes ~40 MB for a moment.)
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from array import array
from bisect import bisect_left
from typing import Callable

from relay.spool import changes
from relay.spool.db import Database
from relay.state.suppressions import normalized

log = logging.getLogger("relay.state")

RELOAD_SHARE = 10            # after a copy that took T seconds, the next waits RELOAD_SHARE * T
RETRY_AFTER = 5.0            # after a copy that failed


def _key(recipient: str, domain: str) -> int:
    """The hash of the pair as stored (normalized)."""
    return hash((normalized(recipient), normalized(domain)))


def _read_copy(counter: changes.Counter, conn: sqlite3.Connection,
               monotonic: Callable[[], float]) -> tuple[int, array, float]:
    """(the count the copy holds every change up to, the sorted hashes, seconds it took
    once the write lock was free)."""
    seen = counter.value()
    conn.execute("BEGIN IMMEDIATE")     # once any writer that counted a change has ended
    conn.execute("ROLLBACK")
    started = monotonic()
    hashes = array("q", sorted(hash(pair) for pair in   # stored normalized: `_key` of each
                               conn.execute("SELECT recipient, domain FROM suppressions")))
    return seen, hashes, monotonic() - started


class SuppressionFilter:
    """Whether a pair is certainly not suppressed, from memory."""

    def __init__(self, db: Database, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.monotonic = monotonic
        self._counter = changes.counter(db.path, "suppressions")
        self._seen = -1                         # the count the copy was made at
        self._hashes = array("q")
        self._copying: asyncio.Task | None = None
        self._next_copy = 0.0
        self._closed = False

    def clear(self, recipient: str, domain: str) -> bool:
        """True when `recipient` is certainly not suppressed for `domain`; False when the
        database must say (the pair may be suppressed, or the copy is not the table now:
        a new one is then started)."""
        if self._counter.value() != self._seen:
            if self.monotonic() >= self._next_copy:
                self._start_copy()
            return False
        key = _key(recipient, domain)
        at = bisect_left(self._hashes, key)
        return at == len(self._hashes) or self._hashes[at] != key

    @property
    def copying(self) -> bool:
        return self._copying is not None

    def _start_copy(self) -> asyncio.Task | None:
        # where a count read may be torn (`changes.Counter.whole`), no copy is ever trusted
        if self._copying is None and not self._closed and changes.Counter.whole:
            self._copying = asyncio.get_running_loop().create_task(self._copy())
        return self._copying

    async def copy(self) -> None:
        """Make the copy again now, or wait for the one being made."""
        copying = self._start_copy()
        if copying is not None:
            await asyncio.shield(copying)

    async def _copy(self) -> None:
        try:
            seen, hashes, took = await self.db.read(
                lambda conn: _read_copy(self._counter, conn, self.monotonic))
        except Exception as exc:                # the list stays read from the database
            log.warning("the suppression list could not be copied to memory (%s); "
                        "RCPT TO reads it from the database", exc)
            self._next_copy = self.monotonic() + RETRY_AFTER
        else:
            self._seen, self._hashes = seen, hashes
            self._next_copy = self.monotonic() + RELOAD_SHARE * took
        finally:
            self._copying = None

    async def close(self) -> None:
        self._closed = True
        if self._copying is not None:
            self._copying.cancel()
            await asyncio.gather(self._copying, return_exceptions=True)

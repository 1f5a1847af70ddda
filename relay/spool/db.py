"""The spool's SQLite database (WAL): one writer thread with group commit, a few readers.

Owns durability and the connections. Writes go through one writer thread that commits
whatever is waiting in one transaction (group commit): under load, many sessions share one
fsync instead of paying one each, and a write is durable (`synchronous=FULL`: the WAL is
fsynced) when its future resolves. One failing write never takes the others down: the
batch is rolled back and run again with a savepoint around each write. Reads run on a small
pool of reader threads; WAL lets them proceed during writes. A point read of hot rows (the
suppression lookup at an RCPT that the listener's copy of the list cannot answer,
`relay/state/suppression_filter.py`) runs on the event loop's own connection instead (`read_hot`):
~5 us on an idle loop, where a hop to a reader thread and back cost ~200 us of CPU and, under
load, a wake-up of the loop's thread each time (under load the read itself cost 65 us of CPU
and ~0.4 ms of waiting for the GIL: hence the copy in memory before it). Writes commit in the
order they were submitted: a write submitted before another is durable when the other is.

The listener and delivery processes each have a writer on the same database, and SQLite lets
one write at a time. A writer that finds the database locked sleeps in SQLite's busy handler
(1, 2, 5, 10 ... 100 ms, whatever happens meanwhile): under load the delivery process spent
more than half its time there and the listener's writer a fifth, with the lock free. So each
writer first takes an exclusive `flock` on `<database>.lock`, which the kernel hands over the
moment the other writer lets go, and only then begins its transaction.

`secure_delete=FAST`: Debian's SQLite is built to zero every freed page, so each delivered
message was written a second time, as zeros (a 100 KB message cost the delivery process
253 KB of disk writes, 24 KB after). FAST still zeroes deleted content in the pages a
delete writes anyway; freed pages keep their bytes until reused, as a queue file's blocks
do after Postfix unlinks it.

The spool (`store.py`: messages and recipients) and the embedded governance state
(`relay/state/sqlite.py`) share one database, and so this writer.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from relay.spool import changes

log = logging.getLogger("relay.spool")
T = TypeVar("T")

_STOP = object()


# how long a read on the event loop's connection waits for a busy database (WAL readers wait
# only while another connection recovers or restarts the WAL) before the reader threads take it
HOT_BUSY_MS = 20


def connect(path: Path, busy_ms: int = 30000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=busy_ms / 1000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    conn.execute("PRAGMA secure_delete=FAST")
    changes.register(conn, path)
    return conn


class _Writer(threading.Thread):
    """The one thread that writes: drains the request queue into one transaction per batch."""

    def __init__(self, path: Path, max_batch: int = 512) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self._conn = connect(path)
        self._lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._max_batch = max_batch

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._requests.put((fn, future, loop))
        return future

    def submit_nowait(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """As submit, with nobody waiting: no future, no wake-up of the caller's loop."""
        self._requests.put((fn, None, None))

    def stop(self) -> None:
        self._requests.put(_STOP)
        self.join()
        self._conn.close()
        os.close(self._lock)

    def run(self) -> None:
        while True:
            first = self._requests.get()
            if first is _STOP:
                return
            fcntl.flock(self._lock, fcntl.LOCK_EX)     # the other process's writer: see above
            try:
                batch = [first]                        # with what came while it waited
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
            finally:
                fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _commit(self, batch: list) -> None:
        results = self._transaction(batch, isolated=False)
        if results is None:                    # one failed: undo the lot, run each in a savepoint
            results = self._transaction(batch, isolated=True)
        for (ok, value), (_, future, loop) in zip(results, batch):
            if future is None:
                if not ok:
                    log.error("a write nobody waits for failed: %s", value)
                continue
            try:
                loop.call_soon_threadsafe(_resolve, future, ok, value)
            except RuntimeError:               # that caller's loop is closed: nobody waits
                pass

    def _transaction(self, batch: list, isolated: bool) -> list[tuple[bool, object]] | None:
        """The batch's writes in one transaction, committed: each write's (ok, its result or
        exception). First without a savepoint each (`isolated` false): that halves the
        statements, and each statement is a release and a retake of the GIL that the event
        loop's thread holds most of the time, while this thread holds the database. If a write
        of several fails, everything is rolled back and None returned: the caller runs the
        batch again, isolated, so one failing write never takes the others down (a write may
        therefore run twice: it does nothing but SQL on `conn`). A batch of one needs no
        savepoint: its transaction is one."""
        conn = self._conn
        results: list[tuple[bool, object]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in batch:
                if not isolated:
                    try:
                        results.append((True, fn(conn)))
                    except Exception as exc:
                        _rollback(conn)
                        return None if len(batch) > 1 else [(False, exc)]
                    continue
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
            _rollback(conn)
            return [(False, exc)] * len(batch)
        return results


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception:                          # the writer must survive to answer the next batch
        log.exception("spool rollback failed")


def _resolve(future: asyncio.Future, ok: bool, value: object) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)  # type: ignore[arg-type]


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = _Writer(path)
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-reader")
        self._hot: sqlite3.Connection | None = None
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._writer.start()
            self._started = True

    def close(self) -> None:
        if self._started:
            self._writer.stop()
            self._started = False
        self._readers.shutdown(wait=True)
        if self._hot is not None:
            self._hot.close()
            self._hot = None

    @property
    def writing(self) -> bool:
        return self._started and self._writer.is_alive()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future:
        """Run `fn` in the writer's next transaction; the future resolves once committed.
        `fn` does nothing but SQL on the connection: if another write of its batch fails, the
        batch is rolled back and run again (`_Writer._transaction`)."""
        return self._writer.submit(fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.submit(fn)

    def write_soon(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Submit `fn` without waiting: it commits with or before any write submitted
        after it (a failure is logged). Nothing wakes the caller's loop when it does."""
        self._writer.submit_nowait(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a reader connection, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._with_reader, fn)

    async def read_hot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn`, a point read (an indexed lookup of a row or two), on the event loop's own
        connection: in this thread, blocking it for the read (~5 us with the pages in memory
        and the loop alone; under load ~0.4 ms, SQLite giving up the GIL for each step; pages
        not in memory are read from the disk here, so only for small, often-read tables). A
        database busy for `HOT_BUSY_MS` sends the read to the reader threads (`read`). Only
        from the event loop's thread: the connection is that thread's."""
        try:
            if self._hot is None:
                self._hot = connect(self.path, busy_ms=HOT_BUSY_MS)
            return fn(self._hot)
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0)     # absent: the module's own errors
            if code & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            return await self.read(fn)

    def now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a connection of its own, in this thread (the CLI, a scrape)."""
        with connect(self.path) as conn:
            return fn(conn)

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return fn(conn)

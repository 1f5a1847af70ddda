"""The spool's database connections. A writer takes `<database>.lock` before it begins a
transaction, so the other process's writer (listener or delivery) hands the database over at
once instead of leaving this one asleep in SQLite's busy handler; deletes do not write the
freed pages again as zeros."""
from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time

import pytest

from relay.spool.db import Database, connect


def wait_for(condition, deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def test_a_writer_waits_for_the_lock_and_commits_after_its_holder(tmp_path):
    asyncio.run(_writer_waits(tmp_path))


async def _writer_waits(tmp_path):
    path = tmp_path / "relay.sqlite3"
    setup = connect(path)
    setup.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT)")
    db = Database(path)
    db.start()
    other = os.open(f"{path}.lock", os.O_RDWR)       # another process's writer holds it
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        future = db.submit(lambda conn: conn.execute("INSERT INTO log (who) VALUES ('writer')"))
        await asyncio.to_thread(wait_for, db._writer._requests.empty)    # taken, now waiting
        setup.execute("BEGIN IMMEDIATE")       # free: the writer has not begun a transaction
        setup.execute("INSERT INTO log (who) VALUES ('holder')")
        setup.execute("COMMIT")
        assert not future.done()
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    await asyncio.wait_for(future, 5)
    assert [who for (who,) in setup.execute("SELECT who FROM log ORDER BY seq")] == \
        ["holder", "writer"]
    setup.close()
    db.close()


def test_the_lock_is_released_after_a_failed_write(tmp_path):
    path = tmp_path / "relay.sqlite3"
    db = Database(path)
    db.start()

    def broken(conn):
        raise ValueError("this write fails")
    with pytest.raises(ValueError):
        asyncio.run(db.write(broken))
    probe = os.open(f"{path}.lock", os.O_RDWR)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)    # raises if the writer kept it
    finally:
        os.close(probe)
    db.close()


def test_deleting_does_not_write_the_freed_pages_again_as_zeros(tmp_path):
    """secure_delete=FAST on every spool connection (2), whatever SQLite was built with."""
    conn = connect(tmp_path / "relay.sqlite3")
    assert conn.execute("PRAGMA secure_delete").fetchone() == (2,)
    conn.close()


def test_a_failing_write_in_a_batch_takes_none_of_the_others_down(tmp_path):
    """Writes that wait together commit in one transaction, without a savepoint each; when
    one fails, the batch is run again with one each: the others commit, the failing write's
    first statement is undone, and its caller gets its exception."""
    path = tmp_path / "relay.sqlite3"
    setup = connect(path)
    setup.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT UNIQUE)")
    db = Database(path)
    db.start()

    def half_then_fail(conn):
        conn.execute("INSERT INTO log (who) VALUES ('half')")
        conn.execute("INSERT INTO log (who) VALUES ('first')")       # UNIQUE: fails

    async def batch():
        other = os.open(f"{path}.lock", os.O_RDWR)   # hold the writer so the three wait together
        fcntl.flock(other, fcntl.LOCK_EX)
        try:
            first = db.submit(lambda conn: conn.execute("INSERT INTO log (who) VALUES ('first')"))
            failing = db.submit(half_then_fail)
            last = db.submit(lambda conn: conn.execute("INSERT INTO log (who) VALUES ('last')"))
        finally:
            fcntl.flock(other, fcntl.LOCK_UN)
            os.close(other)
        return await asyncio.gather(first, failing, last, return_exceptions=True)

    results = asyncio.run(batch())
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert [who for (who,) in setup.execute("SELECT who FROM log ORDER BY seq")] == \
        ["first", "last"]
    setup.close()
    db.close()


def test_a_batch_of_one_failing_write_commits_nothing_of_it(tmp_path):
    path = tmp_path / "relay.sqlite3"
    setup = connect(path)
    setup.execute("CREATE TABLE log (who TEXT UNIQUE)")
    db = Database(path)
    db.start()

    def twice(conn):
        conn.execute("INSERT INTO log VALUES ('once')")
        conn.execute("INSERT INTO log VALUES ('once')")
    with pytest.raises(sqlite3.IntegrityError):
        asyncio.run(db.write(twice))
    assert setup.execute("SELECT COUNT(*) FROM log").fetchone() == (0,)
    asyncio.run(db.write(lambda conn: conn.execute("INSERT INTO log VALUES ('after')")))
    assert setup.execute("SELECT who FROM log").fetchall() == [("after",)]
    setup.close()
    db.close()

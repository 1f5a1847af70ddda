"""The spool's database connections. A writer takes `<database>.lock` before it begins a
transaction, so the other process's writer (listener or delivery) hands the database over at
once instead of leaving this one asleep in SQLite's busy handler; deletes do not write the
freed pages again as zeros."""
from __future__ import annotations

import asyncio
import contextlib
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


@pytest.fixture
def spool_log(tmp_path):
    """(path, a connection of the test's own, a started Database) over a table `log`."""
    path = tmp_path / "relay.sqlite3"
    setup = connect(path)
    setup.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT UNIQUE)")
    db = Database(path)
    db.start()
    yield path, setup, db
    setup.close()
    db.close()


@contextlib.contextmanager
def other_writer(path):
    """The lock held as the other process's writer would hold it."""
    other = os.open(f"{path}.lock", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)


def written(setup) -> list[str]:
    return [who for (who,) in setup.execute("SELECT who FROM log ORDER BY seq")]


def insert(who: str):
    return lambda conn: conn.execute("INSERT INTO log (who) VALUES (?)", (who,))


def test_a_writer_waits_for_the_lock_and_commits_after_its_holder(spool_log):
    path, setup, db = spool_log

    async def scenario():
        with other_writer(path):
            future = db.submit(insert("writer"))
            await asyncio.to_thread(wait_for, db._writer._requests.empty)   # taken, waiting
            setup.execute("BEGIN IMMEDIATE")     # free: the writer has not begun a transaction
            setup.execute("INSERT INTO log (who) VALUES ('holder')")
            setup.execute("COMMIT")
            assert not future.done()
        await asyncio.wait_for(future, 5)
    asyncio.run(scenario())
    assert written(setup) == ["holder", "writer"]


def test_the_lock_is_released_after_a_failed_write(tmp_path):
    path = tmp_path / "relay.sqlite3"
    db = Database(path)
    db.start()

    def broken(conn):
        raise ValueError("this write fails")
    with pytest.raises(ValueError):
        asyncio.run(db.write(broken))
    probe = os.open(f"{path}.lock", os.O_RDWR)

    def free() -> bool:            # the writer answers its batch, then lets go of the lock
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    try:
        wait_for(free)             # fails if the writer kept it
    finally:
        os.close(probe)
    db.close()


def test_deleting_does_not_write_the_freed_pages_again_as_zeros(tmp_path):
    """secure_delete=FAST on every spool connection (2), whatever SQLite was built with."""
    conn = connect(tmp_path / "relay.sqlite3")
    assert conn.execute("PRAGMA secure_delete").fetchone() == (2,)
    conn.close()


def test_a_failing_write_in_a_batch_takes_none_of_the_others_down(spool_log):
    """Writes that wait together commit in one transaction, without a savepoint each; when
    one fails, the batch is run again with one each: the others commit, the failing write's
    first statement is undone, and its caller gets its exception."""
    path, setup, db = spool_log

    def half_then_fail(conn):
        conn.execute("INSERT INTO log (who) VALUES ('half')")
        conn.execute("INSERT INTO log (who) VALUES ('first')")       # UNIQUE: fails

    async def batch():
        with other_writer(path):                 # hold the writer so the three wait together
            futures = [db.submit(insert("first")), db.submit(half_then_fail),
                       db.submit(insert("last"))]
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(batch())
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception)
    assert written(setup) == ["first", "last"]


def test_a_batch_of_one_failing_write_commits_nothing_of_it(spool_log):
    path, setup, db = spool_log

    def twice(conn):
        conn.execute("INSERT INTO log (who) VALUES ('once')")
        conn.execute("INSERT INTO log (who) VALUES ('once')")
    with pytest.raises(sqlite3.IntegrityError):
        asyncio.run(db.write(twice))
    assert written(setup) == []
    asyncio.run(db.write(lambda conn: conn.execute("INSERT INTO log (who) VALUES ('after')")))
    assert written(setup) == ["after"]

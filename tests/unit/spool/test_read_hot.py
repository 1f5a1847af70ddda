"""`Database.read_hot`: a point read on the event loop's own connection (the suppression
lookup at each RCPT), without a hop to a reader thread; a busy database sends it to the
reader threads, so the loop is never held longer than `HOT_BUSY_MS`."""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from relay.spool.db import HOT_BUSY_MS, Database, connect


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "relay.sqlite3"
    setup = connect(path)
    setup.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    setup.close()
    database = Database(path)
    database.start()
    yield database
    database.close()


def value_of(key: str):
    def read(conn: sqlite3.Connection):
        row = conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return (row[0] if row else None), threading.get_ident()
    return read


def test_reads_on_the_loop_thread_and_sees_each_commit_of_another_connection(db):
    other = connect(db.path)

    async def scenario():
        seen = [await db.read_hot(value_of("a"))]
        other.execute("INSERT INTO kv VALUES ('a', 'one')")
        seen.append(await db.read_hot(value_of("a")))
        other.execute("UPDATE kv SET v = 'two' WHERE k = 'a'")
        seen.append(await db.read_hot(value_of("a")))
        return seen
    try:
        seen = asyncio.run(scenario())
    finally:
        other.close()
    assert [value for value, _ in seen] == [None, "one", "two"]
    assert {thread for _, thread in seen} == {threading.get_ident()}


def test_a_busy_database_sends_the_read_to_a_reader_thread(db):
    """SQLite answers SQLITE_BUSY on the loop's thread (after HOT_BUSY_MS: a WAL reader
    waits only while another connection recovers the WAL): the same read runs on a reader
    thread, whose connection waits longer."""
    loop_thread = threading.get_ident()

    def read(conn: sqlite3.Connection):
        if threading.get_ident() == loop_thread:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY_RECOVERY      # an extended code
            raise busy
        return conn.execute("SELECT count(*) FROM kv").fetchone()[0], threading.get_ident()

    count, thread = asyncio.run(db.read_hot(read))
    assert count == 0 and thread != loop_thread


def test_a_busy_database_when_the_loop_connection_is_first_opened_falls_back_too(db, monkeypatch):
    import relay.spool.db as module
    opened = []

    def busy_connect(path, busy_ms=30000):
        if busy_ms == HOT_BUSY_MS:                      # the loop's connection, not a reader's
            opened.append(busy_ms)
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise busy
        return connect(path, busy_ms)
    monkeypatch.setattr(module, "connect", busy_connect)

    async def scenario():
        first = await db.read_hot(value_of("a"))
        second = await db.read_hot(value_of("a"))      # tries to open it again
        return first, second
    first, second = asyncio.run(scenario())
    assert first[0] is None and second[0] is None
    assert opened == [HOT_BUSY_MS, HOT_BUSY_MS]


def test_an_error_without_an_sqlite_code_is_the_caller_s_as_raised(db):
    def odd(conn):
        raise sqlite3.OperationalError("raised by Python, not by SQLite")
    with pytest.raises(sqlite3.OperationalError, match="raised by Python"):
        asyncio.run(db.read_hot(odd))


def test_the_loop_connection_waits_no_longer_than_hot_busy_ms(db):
    async def scenario():
        await db.read_hot(value_of("a"))
        return db._hot.execute("PRAGMA busy_timeout").fetchone()[0]
    assert asyncio.run(scenario()) == HOT_BUSY_MS


def test_other_errors_are_the_caller_s(db):
    async def scenario():
        return await db.read_hot(lambda conn: conn.execute("SELECT * FROM missing").fetchone())
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        asyncio.run(scenario())

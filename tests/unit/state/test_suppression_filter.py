"""relay.state.suppression_filter: the listener's copy of the suppression list, and the
change counter (relay.spool.changes) that tells it when the copy is no longer the table."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from relay.spool import changes
from relay.spool.db import Database, connect
from relay.state import suppressions
from relay.state.suppression_filter import RELOAD_SHARE, RETRY_AFTER, SuppressionFilter
from relay.state.suppressions import SuppressionReason
from tests.conftest import eventually


class Clock:
    """Time that moves by `step` at each reading."""

    def __init__(self) -> None:
        self.now, self.step = 100.0, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now - self.step


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "relay.sqlite3")
    database.start()
    database.now(lambda conn: conn.executescript(suppressions.SCHEMA))
    yield database
    database.close()


def suppress(db: Database, recipient: str) -> None:
    db.now(lambda conn: suppressions.suppress(conn, recipient, "acme.fr",
                                              SuppressionReason.MANUAL, 1.0))


def test_a_copy_answers_for_the_pairs_it_holds_and_no_others(db):
    suppress(db, "gone@x.net")
    copy = SuppressionFilter(db)

    async def scenario():
        assert not copy.clear("new@x.net", "acme.fr")       # no copy yet: ask the database
        await copy.copy()
        return [copy.clear(r, d) for r, d in (("new@x.net", "acme.fr"), ("gone@x.net", "acme.fr"),
                                              (" Gone@X.net", "ACME.fr"), ("gone@x.net", "other.fr"))]
    assert asyncio.run(scenario()) == [True, False, False, True]


def test_a_change_in_another_process_moves_the_counter_this_one_reads(db, tmp_path):
    """The counter is shared memory: a real second process (as `relay suppressions add` is)
    suppresses through its own connection, and this process's copy stops answering."""
    copy = SuppressionFilter(db)
    asyncio.run(copy.copy())
    before = changes.counter(db.path, "suppressions").value()
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from relay.spool.db import connect
        from relay.state import suppressions
        with connect(Path({str(db.path)!r})) as conn:
            suppressions.suppress(conn, "new@x.net", "acme.fr", "manual", 1.0)
        """)], check=True, timeout=60)
    assert changes.counter(db.path, "suppressions").value() == before + 1

    async def lookups():
        return copy.clear("new@x.net", "acme.fr"), copy.clear("other@x.net", "acme.fr")
    assert asyncio.run(lookups()) == (False, False)


def test_a_connection_without_the_counter_cannot_change_the_list(db):
    """The sqlite3 shell, or any connection relay did not open: refused, never uncounted."""
    raw = sqlite3.connect(db.path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="relay_changed"):
        suppressions.suppress(raw, "new@x.net", "acme.fr", SuppressionReason.MANUAL, 1.0)
    raw.close()
    assert db.now(lambda conn: suppressions.lookup(conn, "new@x.net", "acme.fr")) is None


def test_a_copy_waits_for_a_writer_that_counted_a_change_to_end(db):
    """A writer in another process has inserted (and counted) a suppression but not committed:
    a copy made now would miss it while recording the new count, and answer "clear" from then
    on. The copy waits for the write lock, so it holds the suppression once committed."""
    writer = connect(db.path)
    writer.execute("BEGIN")
    suppressions.suppress(writer, "new@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE, 1.0)
    copy = SuppressionFilter(db)

    async def scenario():
        copying = asyncio.ensure_future(copy.copy())
        with pytest.raises(asyncio.TimeoutError):            # held by the open transaction
            await asyncio.wait_for(asyncio.shield(copying), 0.5)
        writer.execute("COMMIT")
        await copying
        return copy.clear("new@x.net", "acme.fr"), copy.clear("other@x.net", "acme.fr")
    try:
        assert asyncio.run(scenario()) == (False, True)
    finally:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()


def test_copies_are_spaced_by_ten_times_what_the_last_one_took(db):
    clock = Clock()
    copy = SuppressionFilter(db, monotonic=clock)

    async def scenario():
        assert not copy.clear("a@x.net", "acme.fr")         # starts the first copy
        assert copy.copying
        clock.step = 1.0                    # its read takes a second (two readings, then
        await eventually(lambda: not copy.copying, "the copy made")   # one at its end)
        clock.step = 0.0
        assert clock.now == 103.0
        assert copy.clear("a@x.net", "acme.fr")
        suppress(db, "b@x.net")
        clock.now = 102.0 + RELOAD_SHARE - 0.5
        assert not copy.clear("a@x.net", "acme.fr") and not copy.copying     # too soon
        clock.now = 102.0 + RELOAD_SHARE
        assert not copy.clear("a@x.net", "acme.fr") and copy.copying
        await eventually(lambda: not copy.copying, "the copy made")
        return copy.clear("a@x.net", "acme.fr"), copy.clear("b@x.net", "acme.fr")
    assert asyncio.run(scenario()) == (True, False)


def test_a_copy_that_fails_is_tried_again_later_and_lookups_read_the_database(db):
    clock = Clock()
    copy = SuppressionFilter(db, monotonic=clock)
    suppress(db, "b@x.net")
    db.now(lambda conn: conn.execute("ALTER TABLE suppressions RENAME TO gone"))

    async def scenario():
        assert not copy.clear("a@x.net", "acme.fr")
        await eventually(lambda: not copy.copying, "the copy tried")
        assert not copy.clear("a@x.net", "acme.fr") and not copy.copying     # not at once
        db.now(lambda conn: conn.execute("ALTER TABLE gone RENAME TO suppressions"))
        clock.now += RETRY_AFTER
        await copy.copy()
        return copy.clear("a@x.net", "acme.fr"), copy.clear("b@x.net", "acme.fr")
    assert asyncio.run(scenario()) == (True, False)


def test_a_closed_filter_makes_no_copy(db):
    copy = SuppressionFilter(db)

    async def scenario():
        await copy.close()
        return copy.clear("a@x.net", "acme.fr"), copy.copying
    assert asyncio.run(scenario()) == (False, False)


def test_where_a_count_may_be_read_torn_no_copy_is_made(db, monkeypatch):
    """On a machine where an 8-byte read is not whole, every lookup reads the database."""
    monkeypatch.setattr(changes.Counter, "whole", False)
    copy = SuppressionFilter(db)

    async def scenario():
        answers = (copy.clear("a@x.net", "acme.fr"), copy.copying)
        await copy.copy()
        return answers + (copy.clear("a@x.net", "acme.fr"),)
    assert asyncio.run(scenario()) == (False, False, False)


_WRITER = """
import random, sys, time
from pathlib import Path
from relay.spool.db import connect
from relay.state import suppressions
random.seed(7)
conn = connect(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    conn.execute("BEGIN IMMEDIATE")
    suppressions.suppress(conn, f"r{i}@x.net", "acme.fr", "manual", 1.0)
    time.sleep(random.random() * 0.002)     # counted, not yet committed: copies meet it
    conn.execute("COMMIT")
    print(i, flush=True)
    time.sleep(random.random() * 0.005)     # and a moment with nothing changing
"""


def test_no_lookup_finds_clear_a_pair_suppressed_before_it_while_copies_race_the_writer(db):
    """The promise, under contention: another process suppresses recipient after recipient,
    each in a transaction that holds its counted change a moment before committing, and says
    so when each commit has returned; meanwhile this process copies the list again and again.
    Every lookup of a recipient already suppressed must go to the database (never "clear"),
    whatever the copy was doing; lookups of other recipients show copies were in use."""
    copy = SuppressionFilter(db)
    count = 400

    async def scenario():
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, str(db.path), str(count),
            stdout=asyncio.subprocess.PIPE)
        done = asyncio.Event()

        async def copy_again_and_again():
            while not done.is_set():
                await copy.copy()
                await asyncio.sleep(0)

        copier = asyncio.create_task(copy_again_and_again())
        cleared, others_clear, suppressed = [], 0, 0
        try:
            while line := await asyncio.wait_for(writer.stdout.readline(), 60):
                suppressed = int(line) + 1
                for fresh in (False, True):         # at once; then with a copy just made
                    if fresh:
                        await copy.copy()
                    for i in {suppressed - 1, suppressed // 2, 0}:
                        if copy.clear(f"r{i}@x.net", "acme.fr"):
                            cleared.append(i)
                    others_clear += copy.clear(f"other{suppressed}@x.net", "acme.fr")
        finally:
            done.set()
            await copier
            await writer.wait()
        return cleared, others_clear, suppressed

    cleared, others_clear, suppressed = asyncio.run(scenario())
    assert suppressed == count
    assert cleared == []
    assert others_clear > 0, "no copy was ever current: the race was not run"

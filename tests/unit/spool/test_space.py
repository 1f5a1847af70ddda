"""relay.spool.space: free space for the spool, and acceptance's guard of spool.min_free."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

import pytest

from relay.errors import TemporaryError
from relay.spool.space import SpaceGuard, free_bytes
from tests.fakes.clock import FakeClock

MB = 2 ** 20


class Disk:
    """What a measure would say; counts how often it is asked."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.asked = 0

    async def measure(self) -> int:
        self.asked += 1
        return self.free


def check(guard: SpaceGuard, incoming: int = 0) -> str:
    try:
        asyncio.run(guard.check(incoming))
    except TemporaryError as exc:
        return str(exc.reply)
    return "ok"


def test_free_bytes_adds_sqlites_free_pages_to_the_filesystems(tmp_path):
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,)] * 500)
    conn.commit()
    fs = os.statvfs(tmp_path)
    before = free_bytes(conn, tmp_path)
    conn.execute("DELETE FROM t")
    conn.commit()
    pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert pages >= 400
    after = free_bytes(conn, tmp_path)
    # the file did not shrink, yet its free pages count as space new mail may use
    assert after - before >= pages * 4096 - 64 * 4096
    assert before >= fs.f_bavail * fs.f_frsize - 64 * MB


def test_below_min_free_is_452_431_and_space_back_takes_mail_again():
    disk, clock = Disk(50 * MB), FakeClock()
    guard = SpaceGuard(200 * MB, disk.measure, clock)
    assert check(guard) == "452 4.3.1 Insufficient system storage, try again later"
    disk.free = 500 * MB
    assert check(guard) == "452 4.3.1 Insufficient system storage, try again later"   # measured 0 s ago
    clock.advance(1.0)
    assert check(guard) == "ok"


def test_measures_at_most_once_per_interval_and_counts_what_it_lets_in():
    disk, clock = Disk(210 * MB), FakeClock()
    guard = SpaceGuard(200 * MB, disk.measure, clock, interval=1.0)
    assert check(guard, 4 * MB) == "ok"
    assert check(guard, 4 * MB) == "ok"
    assert check(guard, 4 * MB).startswith("452 4.3.1")       # 2 MB short: counted, not measured
    assert disk.asked == 1
    clock.advance(1.0)
    assert check(guard) == "ok" and disk.asked == 2            # measured again: still 210 MB


def test_logs_once_when_space_runs_low_and_once_when_it_is_back(caplog):
    disk, clock = Disk(10 * MB), FakeClock()
    guard = SpaceGuard(200 * MB, disk.measure, clock, interval=0.0)
    with caplog.at_level(logging.INFO, logger="relay.spool"):
        for _ in range(3):
            check(guard)
        disk.free = 300 * MB
        for _ in range(3):
            check(guard)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "below spool.min_free" in lines[0] and "taking mail again" in lines[1]


def test_ready_measures_afresh_and_says_why():
    disk, clock = Disk(300 * MB), FakeClock()
    guard = SpaceGuard(200 * MB, disk.measure, clock)
    asyncio.run(guard.ready())
    disk.free = 100 * MB
    with pytest.raises(RuntimeError, match="below spool.min_free"):
        asyncio.run(guard.ready())                  # no interval wait for the probe

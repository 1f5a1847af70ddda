"""Change counters: how many times a table of the spool's database has changed, in shared
memory, so that a process can keep a copy of a table in its memory and know, without asking
SQLite, whether the copy is still the table.

A counter is 8 bytes at the start of `<database>-<table>.changes`, mapped by each process
that reads or fires it. A table that is counted has triggers that call the SQL function
`relay_changed('<table>')` after each insert, update or delete; `connect` (`db.py`) registers
that function on every connection relay opens, and a connection of another program (the
sqlite3 shell) that tries to change the table fails with "no such function": not changed
behind relay's back by accident. (What sets out to go around it can: dropping or disabling
the triggers, or restoring a backup over the database while relay runs; restore with relay
stopped. An older relay run on a database with the triggers fails the same way: drop the
three `<table>_*_counted` triggers first.)

The trigger runs inside the writing transaction, so the counter moves while that writer
holds the database's write lock, before its commit; writers in every process take the same
lock, so increments never race. A copy made after reading the counter, by a read that starts
after the write lock was free once (`BEGIN IMMEDIATE`, then `ROLLBACK`), holds every change
counted so far; a change after that moves the counter again. A writer that dies after its
increment only makes the next reader copy again for nothing.

A read is one aligned 8-byte load, whole on a 64-bit little-endian machine; elsewhere a read
racing an increment could see a count that never was, so `Counter.whole` is False there and
the copies are not trusted. The file must not be deleted while relay runs (a process that
has it mapped would not see the counts of one that made a new file), as `-shm` must not.
"""
from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
from pathlib import Path

_COUNT = struct.Struct("<Q")
_open: dict[str, "Counter"] = {}
_opening = threading.Lock()


class Counter:
    """One table's change counter, mapped from its file."""

    whole = sys.byteorder == "little" and struct.calcsize("P") == 8

    def __init__(self, path: str, owner: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNT.size:
                _owned_like(fd, owner)
                os.ftruncate(fd, _COUNT.size)
            self._map = mmap.mmap(fd, _COUNT.size)
        finally:
            os.close(fd)

    def value(self) -> int:
        """The count now: a read of memory, no system call, the GIL kept."""
        return _COUNT.unpack_from(self._map)[0]

    def bump(self) -> None:
        """Count one change. Only under the database's write lock (the trigger's transaction)."""
        _COUNT.pack_into(self._map, 0, (self.value() + 1) & 0xFFFF_FFFF_FFFF_FFFF)


def _owned_like(fd: int, owner: str) -> None:
    """A new file made by root (`sudo relay suppressions ...` before the service started)
    belongs to the spool's owner, as SQLite does for -wal and -shm: else the service could
    not open it."""
    if os.geteuid() == 0:
        st = os.stat(owner)
        os.fchown(fd, st.st_uid, st.st_gid)


def counter(database: Path, table: str) -> Counter:
    """The change counter of `table` in `database`, one mapping a process."""
    real = os.path.realpath(database)          # a symlinked database: its real file's counter
    path = f"{real}-{table}.changes"
    found = _open.get(path)
    if found is None:
        with _opening:
            found = _open.get(path)
            if found is None:
                found = _open[path] = Counter(path, os.path.dirname(real))
    return found


def _forget_lock() -> None:
    global _opening
    _opening = threading.Lock()


os.register_at_fork(after_in_child=_forget_lock)


def triggers(table: str) -> str:
    """The SQL that makes every change to `table` count (for a schema script)."""
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_{verb.lower()}_counted AFTER {verb} ON {table}"
        f" BEGIN SELECT relay_changed('{table}'); END;\n"
        for verb in ("INSERT", "UPDATE", "DELETE"))


def register(conn, database: Path) -> None:
    """Give `conn` the `relay_changed(table)` function the triggers call."""
    conn.create_function("relay_changed", 1, lambda table: counter(database, table).bump())

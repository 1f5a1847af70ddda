"""Free space for the spool: what new mail may use, so that deliveries can always record
their outcome (`spool.min_free`, as Postfix's `queue_minfree`).

Free space is what the spool's filesystem has left for an unprivileged writer plus the
pages SQLite already holds free inside the database file: a delivered message's pages go
to SQLite's freelist, not back to the filesystem, so counting the filesystem alone would
never see the space that deliveries give back, and relay would refuse mail forever after
one full disk.

`SpaceGuard` is acceptance's view: below `min_free` a new message gets `452 4.3.1` (at MAIL
FROM, and before storing at DATA, counting the message's own size); it takes mail again by
itself once space is back. It measures at most every `interval` seconds (a statvfs and a
PRAGMA, off the event loop); headroom of 200 MB covers what arrives in between.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Awaitable, Callable

from relay import replies
from relay.clock import Clock
from relay.errors import TemporaryError

log = logging.getLogger("relay.spool")


def free_bytes(conn: sqlite3.Connection, directory: Path) -> int:
    """Bytes the spool can still write: the filesystem's free space for non-root writers
    plus the database's own free pages."""
    fs = os.statvfs(directory)
    freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return fs.f_bavail * fs.f_frsize + freelist * page_size


class SpaceGuard:
    def __init__(self, min_free: int, measure: Callable[[], Awaitable[int]], clock: Clock,
                 interval: float = 1.0) -> None:
        self.min_free = min_free
        self.measure = measure
        self.clock = clock
        self.interval = interval
        self._free: int | None = None
        self._at = float("-inf")
        self._low = False

    async def check(self, incoming: int = 0) -> None:
        """Raise `452 4.3.1` unless `incoming` more bytes leave `min_free` free."""
        now = self.clock.now()
        if self._free is None or now - self._at >= self.interval:
            self._free, self._at = await self.measure(), now
            self._note(self._free < self.min_free)
        if self._free - incoming < self.min_free:
            raise TemporaryError(replies.R452_STORAGE,
                                 f"spool free space {self._free} bytes, min_free {self.min_free}")
        self._free -= incoming            # until the next measure: what this message takes

    async def ready(self) -> None:
        """/readyz: raise while new mail is refused for want of space (a fresh measure)."""
        self._at = float("-inf")
        try:
            await self.check()
        except TemporaryError:
            raise RuntimeError(f"spool free space {self._free} bytes is below spool.min_free "
                               f"({self.min_free}): new mail gets 452 4.3.1") from None

    def _note(self, low: bool) -> None:
        """One log line per change of state, not one per refused message."""
        if low and not self._low:
            log.error("spool free space %d bytes is below spool.min_free (%d): new mail gets "
                      "452 4.3.1; deliveries go on and free space", self._free, self.min_free)
        elif self._low and not low:
            log.warning("spool free space is back (%d bytes): taking mail again", self._free)
        self._low = low

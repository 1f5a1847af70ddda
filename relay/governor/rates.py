"""Sliding-window rate limits: at most `count` units in any `period` seconds, per key.

A window holds (time, units) entries for the last period only, with their running sum, so a
question costs O(1) amortized. Sends within one 1/1000 of the period share one entry, stamped
at that slice's end (later than sent: they leave the window late, never early, so no window
ever holds more than the limit), so a window never holds more than ~1000 entries, however
high the rate.
"""
from __future__ import annotations

import math
from collections import deque

from relay.units import Rate


GRANULARITY = 1000


class _Window:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, horizon: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]


class SlidingWindow:
    def __init__(self, saved: dict[str, list[tuple[float, int]]] | None = None) -> None:
        """`saved`: what `export` returned, so windows outlive a restart of the process."""
        self._windows: dict[str, _Window] = {}
        for key, entries in (saved or {}).items():
            window = self._windows[key] = _Window()
            window.entries.extend((float(ts), int(n)) for ts, n in sorted(entries))
            window.total = sum(n for _, n in window.entries)

    def export(self, horizon: float) -> dict[str, list[tuple[float, int]]]:
        """The entries newer than `horizon` (now minus the longest period in use), by key."""
        out = {}
        for key, window in self._windows.items():
            entries = [(ts, n) for ts, n in window.entries if ts > horizon]
            if entries:
                out[key] = entries
        return out

    def wait_until(self, key: str, rate: Rate, units: int, now: float) -> float | None:
        """None when `units` more fit now; else the earliest time they will (for more units
        than the whole rate: when the window is empty)."""
        window = self._windows.get(key)
        if window is None:
            return None
        window.expire(now - rate.period)
        if not window.entries or window.total + units <= rate.count:
            return None
        need = window.total + min(units, rate.count) - rate.count
        for ts, n in window.entries:
            need -= n
            if need <= 0:
                return ts + rate.period
        return window.entries[-1][0] + rate.period

    def room(self, key: str, rate: Rate, now: float) -> int:
        """How many more units fit now."""
        window = self._windows.get(key)
        if window is None:
            return rate.count
        window.expire(now - rate.period)
        return max(0, rate.count - window.total)

    def record(self, key: str, units: int, now: float, period: float = 0.0) -> None:
        """`units` sent at `now`, counted at the end of their 1/1000 of `period` (later than
        sent, never earlier: they leave the window a little late, never early)."""
        window = self._windows.setdefault(key, _Window())
        entries = window.entries
        quantum = period / GRANULARITY
        stamp = math.ceil(now / quantum) * quantum if quantum > 0 else now
        if entries and entries[-1][0] == stamp:
            entries[-1] = (stamp, entries[-1][1] + units)
        else:
            entries.append((stamp, units))
        window.total += units


class Line:
    """The order in which mail held by a rate goes again: each held message gets a slot of
    its own, `spacing` seconds per unit after the one before, so a backlog comes due at the
    rate's pace. (Holding a whole backlog until the window moves would make all of it due at
    once, to be held again but for the few that fit: work in the size of the backlog at every
    step of the window.) A message back at its slot keeps its place in the line: it waits
    for the window only, it never goes to the end of the line again."""

    MAX_TICKETS = 1_000_000
    # Held messages come back in slot order. When the first one still owed is this late, the
    # rest are gone too (`relay queue delete`, a reload): the line is dropped, rather than
    # making new mail wait for slots nobody will use.
    GRACE = 120.0

    def __init__(self) -> None:
        self._next: dict[str, float] = {}         # line -> the next free slot
        self._head: dict[str, float] = {}         # line -> the next slot for one held again
        self._tickets: dict[str, float] = {}      # message id -> its slot
        self._order: dict[str, deque[tuple[float, str]]] = {}   # line -> (slot, ticket)

    def turn(self, ticket: str | None) -> bool:
        """Whether `ticket` holds a slot: it is back, so its turn has come (a message is due
        early only when the operator says so: `relay queue retry`). The slot is used up."""
        return bool(ticket) and self._tickets.pop(ticket, None) is not None

    def waiting(self, line: str, now: float) -> bool:
        """Whether messages of `line` hold slots still to come: newcomers queue behind them."""
        self._drop_if_gone(line, now)
        return self._next.get(line, 0.0) > now

    def sweep(self, now: float) -> list[str]:
        """Drop the lines whose messages stopped coming back; which lines had some owed."""
        gone = []
        for line in list(self._order):
            if self._drop_if_gone(line, now):
                gone.append(line)
        return gone

    def _drop_if_gone(self, line: str, now: float) -> bool:
        """Drop `line` if nothing is owed in it any more, or its first owed message is
        `GRACE` late; True if messages were still owed (mail may be held behind them)."""
        order = self._order.get(line)
        while order and order[0][1] not in self._tickets:       # came back already
            order.popleft()
        late = bool(order) and order[0][0] < now - self.GRACE
        if not order or late or self._next.get(line, 0.0) <= now:
            for name in (self._order, self._next, self._head):
                name.pop(line, None)
        return late

    def take(self, line: str, ticket: str | None, earliest: float, units: int,
             spacing: float) -> float:
        """The next slot of `line`, not before `earliest`, for `units` units."""
        slot = max(earliest, self._next.get(line, earliest))
        self._next[line] = slot + units * spacing
        if ticket:
            self.keep(ticket, slot)
            self._order.setdefault(line, deque()).append((slot, ticket))
        return slot

    def again(self, line: str, ticket: str, earliest: float, units: int, spacing: float) -> float:
        """A slot for a message whose turn came but not its window's (jitter, or the window
        shared with other mail): near the head of the line, but each its own, so such
        messages are not all due at one instant."""
        slot = max(earliest, self._head.get(line, earliest))
        self._head[line] = slot + units * spacing
        self.keep(ticket, slot)
        self._order.setdefault(line, deque()).appendleft((slot, ticket))
        return slot

    def keep(self, ticket: str, slot: float) -> None:
        """`ticket` keeps (or gets) its place, due at `slot`."""
        if len(self._tickets) >= self.MAX_TICKETS:     # messages deleted or gone elsewhere
            oldest = sorted(self._tickets.values())[len(self._tickets) // 2]
            self._tickets = {t: s for t, s in self._tickets.items() if s > oldest}
        self._tickets[ticket] = slot

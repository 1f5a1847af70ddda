"""The governor: how many of a message's recipients may this domain send now, and when may
the rest go?

Asked by the delivery pipeline before each attempt, per sender domain:
0. a domain paused by the operator waits (`relay domains pause D`, until `resume`);
   bulk mail is paced at `limits.bulk.rate`
1. `limits.domain_rate` (sliding window, default and per-domain values)
2. the warm-up cap of the day (`limits.warmup.schedule`, day 0 = first delivery through relay)
3. the spike guard after warm-up (`limits.spike.max_growth`)
Bulk mail may use only `1 - limits.bulk.reserve` of 1 to 3 (80% by default): the rest is
transactional mail's, so a newsletter never holds back a password reset. Mail held by a rate
(0 and 1) gets a slot of its own in its domain's line, at the rate's pace (`rates.Line`), so
a backlog of 100,000 comes due a few at a time, not all at once to be held again.
Limits count recipients (DESIGN "Governance unit"), and a grant can be partial: a message
whose recipients do not all fit gets what fits now, and its other recipients wait, in its
place in the line, until their turn. No message passes a rate, a bulk pace or a daily cap
whole, however many recipients it has: one larger than a day's cap leaves over several days.
A "wait" is not an attempt: the message stays queued and is due again at T. Daily volumes and
first-send days come from the spool database at start and are counted in memory as
deliveries happen; the spool persists them with each delivery outcome.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.clock import Clock
from relay.config import Limits
from relay.governor.rates import Line, SlidingWindow
from relay.governor.warmup import SPIKE_DAYS, spike_cap, warmup_cap, warmup_day
from relay.clock import DAY, day_of
from relay.units import Rate


# A paused domain's mail is held this long; the delivery process releases it as soon as it
# sees the pause lifted (or, at its start, a pause lifted while it was down), so this is only
# the longest wait should a release be missed, and a big paused backlog is not reloaded and
# held again every few seconds.
PAUSE_RECHECK = 3600.0


class HoldReason(enum.StrEnum):
    PAUSED = "paused"
    RATE = "rate"
    BULK = "bulk_pacing"
    WARMUP = "warmup"
    SPIKE = "spike"


@dataclass(frozen=True, slots=True)
class Hold:
    until: float
    reason: HoldReason
    detail: str


@dataclass(frozen=True, slots=True)
class Grant:
    """`count` recipients may go now; the rest wait until `hold.until` (None: all granted)."""
    count: int
    hold: Hold | None


_UNLIMITED = 1 << 62


class Governor:
    def __init__(self, limits: Limits, clock: Clock, first_send: dict[str, float],
                 volumes: dict[tuple[str, int], int],
                 windows: dict[str, list[tuple[float, int]]] | None = None) -> None:
        """`windows`: the rate windows `export_windows` saved when the last delivery process
        stopped, so a reload or restart does not start the rates from empty."""
        self.limits = limits
        self.clock = clock
        self._first_send = dict(first_send)
        self._volumes = dict(volumes)
        self._windows = SlidingWindow(windows)
        self._line = Line()
        self._paused: dict[str, tuple[str, str]] = {}
        self._in_flight: dict[str, int] = {}

    def export_windows(self) -> dict[str, list[tuple[float, int]]]:
        """The rate windows' recent entries, to be handed to the next Governor."""
        periods = [rate.period for rate in self.limits.domain_rate.values()]
        longest = max(periods + [self.limits.bulk.rate.period])
        return self._windows.export(self.clock.now() - longest)

    def set_paused(self, paused: dict[str, tuple[str, str]]) -> None:
        """Paused domains as the spool has them: domain -> (scope "all" | "bulk", reason);
        the operator's pauses (`relay domains pause`) and the reputation rules' ones."""
        self._paused = dict(paused)

    def reserve(self, domain: str, asked: int, bulk: bool = False,
                ticket: str | None = None) -> Grant:
        """How many of `asked` recipients may go now, and when to ask for the rest: one
        decision, counted at once (the rate windows and the recipients in flight), so
        parallel workers never pass a limit together. No message passes a limit whole: the
        grant is what fits every rate and the day's cap; the rest waits (not an attempt).
        `ticket` (the message id) keeps a message held by a rate in its place in the line."""
        now = self.clock.now()
        pause = self._paused.get(domain)
        if pause is not None and (pause[0] == "all" or bulk):
            return Grant(0, Hold(now + PAUSE_RECHECK, HoldReason.PAUSED, pause[1]))
        line = domain + ("#bulk" if bulk else "")
        turn = self._line.turn(ticket)
        if ticket is not None and not turn and self._line.waiting(line, now):
            spacing, reason, detail = self._pace(domain, bulk)        # behind the held mail
            return Grant(0, Hold(self._line.take(line, ticket, now, asked, spacing), reason, detail))
        room = self._rate_room(domain, bulk, now)
        cap_room, cap_hold = self._cap_room(domain, bulk, now)
        granted = min(asked, room, cap_room)
        if granted:
            self._count(domain, granted, bulk, now)
        if granted == asked:
            return Grant(granted, None)
        if cap_room <= min(asked, room):          # the day's cap binds: tomorrow
            return Grant(granted, cap_hold)
        hold = self._rate_hold(domain, bulk, now)     # when one more fits, after this grant
        if ticket is not None:
            # its turn came, but not the window's: a slot at the line's head; else (a newcomer,
            # or the rest of a message partly granted) the line's next slot, mail coming later
            # queues behind it. A slot is at most one window long: the rest of a big message
            # must not queue behind its own earlier slot next time round.
            spacing, _, _ = self._pace(domain, bulk)
            place = self._line.again if turn and not granted else self._line.take
            units = min([asked - granted] + [limit.count for _, limit, _, _
                                             in self._rate_checks(domain, bulk)])
            hold = Hold(place(line, ticket, hold.until, units, spacing), hold.reason, hold.detail)
        return Grant(granted, hold)

    def _rate_room(self, domain: str, bulk: bool, now: float) -> int:
        """How many recipients every rate lets through now."""
        return min((self._windows.room(key, limit, now)
                    for key, limit, _, _ in self._rate_checks(domain, bulk)), default=_UNLIMITED)

    def _cap_room(self, domain: str, bulk: bool, now: float) -> tuple[int, Hold | None]:
        """How many recipients the day's cap (warm-up or spike) still lets through, counting
        those in flight; the hold until tomorrow for the rest."""
        today = day_of(now)
        cap, reason = self.daily_cap(domain, today)
        if cap is None:
            return _UNLIMITED, None
        sent = self._volumes.get((domain, today), 0) + self._in_flight.get(domain, 0)
        share = max(1, int(cap * self._share(bulk))) if cap else 0    # as a rate's: never 0
        return max(0, share - sent), Hold((today + 1) * DAY, reason,
                                          f"{reason.value} cap {cap}/day{self._of(bulk)} "
                                          f"reached ({sent} sent)")

    def _rate_checks(self, domain: str, bulk: bool) -> list[tuple[str, Rate, HoldReason, str]]:
        """(window key, limit, reason, detail): bulk pacing, then the domain rate: bulk mail
        within its share of it (its own window, so transactional mail inside the reserve
        does not slow the bulk line), and all mail within the whole of it."""
        checks = []
        rate = self.limits.rate_for(domain)
        if bulk:
            pace = self.limits.bulk.rate
            checks.append((domain + "#bulk", pace, HoldReason.BULK, f"bulk.rate {pace.text}"))
            if rate is not None:
                share = Rate(max(1, int(rate.count * self._share(True))), rate.period, rate.text)
                checks.append((domain + "#share", share, HoldReason.RATE,
                               f"domain_rate {rate.text}{self._of(True)}"))
        if rate is not None:
            checks.append((domain, rate, HoldReason.RATE, f"domain_rate {rate.text}"))
        return checks

    def _rate_hold(self, domain: str, bulk: bool, now: float) -> Hold:
        """Until one more recipient fits every rate (the latest of their answers)."""
        holds = [Hold(self._windows.wait_until(key, limit, 1, now) or now, reason, detail)
                 for key, limit, reason, detail in self._rate_checks(domain, bulk)]
        return max(holds, key=lambda h: h.until)

    def sweep(self) -> set[str]:
        """Domains whose line was dropped because its messages stopped coming back (their
        backlog was deleted): mail held behind it should be looked at again now."""
        return {line.removesuffix("#bulk") for line in self._line.sweep(self.clock.now())}

    def _pace(self, domain: str, bulk: bool) -> tuple[float, HoldReason, str]:
        """Seconds per recipient of the binding rate, for spacing the line's slots."""
        return max(((limit.period / limit.count, reason, detail)
                    for _, limit, reason, detail in self._rate_checks(domain, bulk)),
                   key=lambda p: p[0], default=(0.0, HoldReason.RATE, "domain_rate"))

    def _share(self, bulk: bool) -> float:
        """How much of a rate or daily cap the mail may use: bulk leaves the reserve."""
        return 1.0 - self.limits.bulk.reserve if bulk else 1.0

    def _of(self, bulk: bool) -> str:
        return f" (bulk's {self._share(True):.0%})" if bulk else ""

    def daily_cap(self, domain: str, today: int) -> tuple[int | None, HoldReason]:
        first = self._first_send.get(domain)
        first_day = day_of(first) if first is not None else None
        day = warmup_day(first_day, today)
        cap = warmup_cap(self.limits.warmup.schedule, day)
        if cap is not None:
            return cap, HoldReason.WARMUP
        previous = [self._volumes.get((domain, today - i), 0) for i in range(1, SPIKE_DAYS + 1)]
        history = 0 if first_day is None else today - first_day
        return spike_cap(self.limits.spike.max_growth, previous, history), HoldReason.SPIKE

    def _count(self, domain: str, recipients: int, bulk: bool, now: float) -> None:
        """Recipients granted: in flight until `delivered`, and in the rate windows."""
        self._in_flight[domain] = self._in_flight.get(domain, 0) + recipients
        rate = self.limits.rate_for(domain)
        if rate is not None:                      # no limit, nothing to remember
            self._windows.record(domain, recipients, now, rate.period)
        if bulk:
            self._windows.record(domain + "#bulk", recipients, now, self.limits.bulk.rate.period)
            if rate is not None:
                self._windows.record(domain + "#share", recipients, now, rate.period)

    def delivered(self, domain: str, recipients: int, attempted: int | None = None) -> None:
        """Recipients the route accepted (of `attempted` sent): they count toward the day's
        volume; the attempt is no longer in flight."""
        left = self._in_flight.get(domain, 0) - (recipients if attempted is None else attempted)
        if left > 0:
            self._in_flight[domain] = left
        else:
            self._in_flight.pop(domain, None)
        if recipients <= 0:                       # nothing delivered: the warm-up has not begun
            return
        now = self.clock.now()
        key = (domain, day_of(now))
        self._volumes[key] = self._volumes.get(key, 0) + recipients
        self._first_send.setdefault(domain, now)
        for old in [k for k in self._volumes if k[1] < day_of(now) - SPIKE_DAYS - 1]:
            del self._volumes[old]

    def status(self, domain: str) -> dict:
        """What `relay domains list` shows of a domain."""
        today = day_of(self.clock.now())
        first = self._first_send.get(domain)
        cap, reason = self.daily_cap(domain, today)
        pause = self._paused.get(domain)
        return {"state": f"paused ({pause[0]})" if pause else "active",
                "warmup_day": warmup_day(day_of(first) if first else None, today),
                "today": self._volumes.get((domain, today), 0), "cap": cap,
                "cap_reason": reason.value if cap is not None else None,
                "rate": (self.limits.rate_for(domain).text if self.limits.rate_for(domain) else None)}

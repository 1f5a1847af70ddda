"""The governor: how many of a message's recipients may this domain send now, and when may
the rest go?

Asked by the delivery pipeline before each attempt, per sender domain:
0. a domain paused by the operator waits (`relay domains pause D`, until `resume`);
   bulk mail is paced at `limits.bulk.rate`
1. `limits.domain_rate` (sliding window, default and per-domain values)
2. the warm-up cap of the day (`limits.warmup.schedule`, day 0 = first delivery through relay;
   a day counts only when it was healthy: not paused, bounce and complaint rates under the
   reputation limits)
3. the spike guard after warm-up (`limits.spike.max_growth`)
With `limits.warmup.per_provider`, 2 and 3 are counted per mailbox provider of the
recipients (`providers.py`): each provider has its own first day, volumes and cap; the rates
(0 and 1) are the domain's.
Bulk mail may use only `1 - limits.bulk.reserve` of 1 to 3 (80% by default): the rest is
transactional mail's, so a newsletter never holds back a password reset. Mail held by a rate
(0 and 1) gets a slot of its own in its domain's line, at the rate's pace (`rates.Line`), so
a backlog of 100,000 comes due a few at a time, not all at once to be held again.
Limits count recipients (DESIGN "Governance unit"), and a grant can be partial: a message
whose recipients do not all fit gets what fits now, and its other recipients wait, in its
place in the line, until their turn. No message passes a rate, a bulk pace or a daily cap
whole, however many recipients it has: one larger than a day's cap leaves over several days.
A "wait" is not an attempt: the message stays queued and is due again at T. Daily volumes and
first-send days come from the state (`relay/state/`) at start and are counted in memory
as deliveries happen; the state persists them with each delivery outcome.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.clock import Clock
from relay.config import Limits
from relay.governor.rates import Line, SlidingWindow
from relay.governor.warmup import (SPIKE_DAYS, SPIKE_FLOOR, bulk_share, spike_cap, warmup_cap,
                                   warmup_day)
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
    STATE = "state"          # a shared state that does not answer: nothing goes ungranted


@dataclass(frozen=True, slots=True)
class Hold:
    until: float
    reason: HoldReason
    detail: str


@dataclass(frozen=True, slots=True)
class Grant:
    """`count` recipients may go now (`by_provider`: how many of each provider's, when asked
    by provider); the rest wait until `hold.until` (None: all granted)."""
    count: int
    hold: Hold | None
    by_provider: dict[str, int] | None = None
    reservation: str = ""          # names the grant: its outcome's key (State.record_outcome)


@dataclass(frozen=True, slots=True)
class Decision:
    """The counting part of a reservation (`Governor.decide`): what each provider is
    granted, and why the rest waits."""
    granted: dict[str, int]
    cap_hold: Hold | None          # some wait for the day's cap: until the next UTC midnight
    rate_rest: int                 # recipients a rate holds back
    rate_hold: Hold | None         # when one more fits every rate, after this grant
    paused: str | None = None      # the pause's reason, when a shared state found one
    epoch: float | None = None     # a shared state: when the domain's keys were made
    refilling: bool = False        # ... and it is within their grace: nothing granted


_UNLIMITED = 1 << 62
WHOLE = ""          # the provider of every recipient when caps are not per provider


def ramp(domain: str, provider: str = WHOLE) -> str:
    """The key of a daily-cap ramp: the domain's, or one mailbox provider's within it."""
    return f"{domain} {provider}" if provider else domain


def share_of(limits: Limits, bulk: bool) -> float:
    """How much of a rate or daily cap the mail may use: bulk leaves the reserve."""
    return 1.0 - limits.bulk.reserve if bulk else 1.0


def _of(limits: Limits, bulk: bool) -> str:
    return f" (bulk's {share_of(limits, True):.0%})" if bulk else ""


def rate_checks(limits: Limits, domain: str, bulk: bool) -> list[tuple[str, Rate, HoldReason, str]]:
    """(window key, limit, reason, detail): bulk pacing, then the domain rate: bulk mail
    within its share of it (its own window, so transactional mail inside the reserve does not
    slow the bulk line), and all mail within the whole of it."""
    checks = []
    rate = limits.rate_for(domain)
    if bulk:
        pace = limits.bulk.rate
        checks.append((domain + "#bulk", pace, HoldReason.BULK, f"bulk.rate {pace.text}"))
        if rate is not None:
            share = Rate(max(1, int(rate.count * share_of(limits, True))), rate.period, rate.text)
            checks.append((domain + "#share", share, HoldReason.RATE,
                           f"domain_rate {rate.text}{_of(limits, True)}"))
    if rate is not None:
        checks.append((domain, rate, HoldReason.RATE, f"domain_rate {rate.text}"))
    return checks


def cap_detail(limits: Limits, reason: HoldReason, cap: int, provider: str, bulk: bool,
               sent: int) -> str:
    """What a hold for the day's cap says."""
    of = f" to {provider}" if provider else ""
    return f"{reason.value} cap {cap}/day{of}{_of(limits, bulk)} reached ({sent} sent)"


def pace(limits: Limits, domain: str, bulk: bool) -> tuple[float, HoldReason, str]:
    """Seconds per recipient of the binding rate, for spacing the line's slots."""
    return max(((limit.period / limit.count, reason, detail)
                for _, limit, reason, detail in rate_checks(limits, domain, bulk)),
               key=lambda p: p[0], default=(0.0, HoldReason.RATE, "domain_rate"))


def grant_of(granted: dict[str, int], by_provider: bool, hold: Hold | None) -> Grant:
    return Grant(sum(granted.values()), hold, granted if by_provider else None)


class Pacer:
    """The node's own part of a reservation: the line of its mail held by a rate
    (`rates.Line`), around the counting part (`Decision`), which a shared state makes."""

    def __init__(self) -> None:
        self._line = Line()

    def ahead(self, limits: Limits, domain: str, bulk: bool, ticket: str | None, total: int,
              now: float) -> tuple[Hold | None, bool]:
        """(a hold behind the held mail, or None; whether the ticket's turn came)."""
        line = domain + ("#bulk" if bulk else "")
        turn = self._line.turn(ticket)
        if ticket is not None and not turn and self._line.waiting(line, now):
            spacing, reason, detail = pace(limits, domain, bulk)     # behind the held mail
            return Hold(self._line.take(line, ticket, now, total, spacing), reason, detail), turn
        return None, turn

    def grant(self, limits: Limits, domain: str, bulk: bool, ticket: str | None, turn: bool,
              total: int, by_provider: bool, decision: Decision) -> Grant:
        """The grant, and for what a rate holds back, a slot in the line."""
        count = sum(decision.granted.values())
        if count == total:
            return grant_of(decision.granted, by_provider, None)
        if not decision.rate_rest:
            return grant_of(decision.granted, by_provider, decision.cap_hold)
        hold = decision.rate_hold
        if ticket is not None:
            # its turn came, but not the window's: a slot at the line's head; else (a newcomer,
            # or the rest of a message partly granted) the line's next slot, mail coming later
            # queues behind it. A slot is at most one window long: the rest of a big message
            # must not queue behind its own earlier slot next time round.
            line = domain + ("#bulk" if bulk else "")
            spacing, _, _ = pace(limits, domain, bulk)
            place = self._line.again if turn and not count else self._line.take
            units = min([decision.rate_rest] + [limit.count for _, limit, _, _
                                                in rate_checks(limits, domain, bulk)])
            hold = Hold(place(line, ticket, hold.until, units, spacing), hold.reason, hold.detail)
        return grant_of(decision.granted, by_provider, hold)

    def sweep(self, now: float) -> set[str]:
        """Domains whose line was dropped because its messages stopped coming back."""
        return {line.removesuffix("#bulk") for line in self._line.sweep(now)}


class Governor:
    def __init__(self, limits: Limits, clock: Clock, first_send: dict[str, float],
                 volumes: dict[tuple[str, int], int],
                 windows: dict[str, list[tuple[float, int]]] | None = None,
                 unhealthy: dict[str, set[int]] | None = None) -> None:
        """`first_send` and `volumes` are keyed by ramp (`ramp()`: the domain, or a provider
        within it). `windows`: the rate windows `export_windows` saved when the last delivery
        process stopped, so a reload or restart does not start the rates from empty.
        `unhealthy`: per domain, the days that do not count toward the warm-up."""
        self.limits = limits
        self.clock = clock
        self._first_send = dict(first_send)
        self._volumes = dict(volumes)
        self._windows = SlidingWindow(windows)
        self.pacer = Pacer()
        self._paused: dict[str, tuple[str, str]] = {}
        self._in_flight: dict[str, int] = {}
        self._unhealthy = dict(unhealthy or {})

    def export_windows(self) -> dict[str, list[tuple[float, int]]]:
        """The rate windows' recent entries, to be handed to the next Governor."""
        periods = [rate.period for rate in self.limits.domain_rate.values()]
        longest = max(periods + [self.limits.bulk.rate.period])
        return self._windows.export(self.clock.now() - longest)

    def set_paused(self, paused: dict[str, tuple[str, str]]) -> None:
        """Paused domains as the spool has them: domain -> (scope "all" | "bulk", reason);
        the operator's pauses (`relay domains pause`) and the reputation rules' ones."""
        self._paused = dict(paused)

    def set_unhealthy(self, unhealthy: dict[str, set[int]]) -> None:
        """Per domain, the days that do not count toward the warm-up (paused, or bounce or
        complaint rate over the reputation limit): feedback keeps arriving for past days."""
        self._unhealthy = dict(unhealthy)

    def reserve(self, domain: str, asked: int | dict[str, int], bulk: bool = False,
                ticket: str | None = None) -> Grant:
        """How many of `asked` recipients may go now, and when to ask for the rest: one
        decision, counted at once (the rate windows and the recipients in flight), so
        parallel workers never pass a limit together. No message passes a limit whole: the
        grant is what fits every rate and the day's cap; the rest waits (not an attempt).
        `asked` by mailbox provider (in the message's order) when caps are per provider.
        `ticket` (the message id) keeps a message held by a rate in its place in the line."""
        by_provider = isinstance(asked, dict)
        wanted = dict(asked) if by_provider else {WHOLE: asked}
        total = sum(wanted.values())
        now = self.clock.now()
        pause = self._paused.get(domain)
        if pause is not None and (pause[0] == "all" or bulk):
            return grant_of(dict.fromkeys(wanted, 0), by_provider,
                            Hold(now + PAUSE_RECHECK, HoldReason.PAUSED, pause[1]))
        hold, turn = self.pacer.ahead(self.limits, domain, bulk, ticket, total, now)
        if hold is not None:
            return grant_of(dict.fromkeys(wanted, 0), by_provider, hold)
        decision = self.decide(domain, wanted, bulk, now)
        return self.pacer.grant(self.limits, domain, bulk, ticket, turn, total, by_provider,
                                decision)

    def decide(self, domain: str, wanted: dict[str, int], bulk: bool, now: float) -> Decision:
        """The counting part of a reservation, at once: each provider (in order) gets what
        its day's cap and what the rates leave after those before it allow, and is counted
        (in flight, and in the rate windows). A shared state makes this one atomic script."""
        room = self._rate_room(domain, bulk, now)
        granted: dict[str, int] = {}
        cap_hold, rate_rest = None, 0
        for provider, n in wanted.items():
            cap_room, hold = self._cap_room(domain, provider, bulk, now)
            granted[provider] = min(n, cap_room, room)
            if granted[provider] < n:
                if cap_room <= min(n, room):      # the day's cap binds: tomorrow
                    cap_hold = cap_hold or hold
                else:
                    rate_rest += n - granted[provider]
            room -= granted[provider]
            if granted[provider]:
                self._count(domain, provider, granted[provider], bulk, now)
        # when one more fits every rate, after this grant
        rate_hold = self._rate_hold(domain, bulk, now) if rate_rest else None
        return Decision(granted, cap_hold, rate_rest, rate_hold)

    def _rate_room(self, domain: str, bulk: bool, now: float) -> int:
        """How many recipients every rate lets through now."""
        return min((self._windows.room(key, limit, now)
                    for key, limit, _, _ in self._rate_checks(domain, bulk)), default=_UNLIMITED)

    def _cap_room(self, domain: str, provider: str, bulk: bool, now: float) -> tuple[int, Hold | None]:
        """How many recipients of `provider` the day's cap (warm-up or spike) still lets
        through, counting those in flight; the hold until tomorrow for the rest."""
        today = day_of(now)
        cap, reason = self.daily_cap(domain, today, provider)
        if cap is None:
            return _UNLIMITED, None
        key = ramp(domain, provider)
        sent = self._sent(domain, provider, today) + self._in_flight.get(key, 0)
        previous = ([self._sent(domain, provider, today - i) for i in range(1, SPIKE_DAYS + 1)]
                    if bulk and reason is HoldReason.SPIKE else [])
        share = bulk_share(cap, self._share(bulk), reason.value, previous)
        return max(0, share - sent), Hold((today + 1) * DAY, reason,
                                          cap_detail(self.limits, reason, cap, provider, bulk, sent))

    def _rate_checks(self, domain: str, bulk: bool) -> list[tuple[str, Rate, HoldReason, str]]:
        return rate_checks(self.limits, domain, bulk)

    def _rate_hold(self, domain: str, bulk: bool, now: float) -> Hold:
        """Until one more recipient fits every rate (the latest of their answers)."""
        holds = [Hold(self._windows.wait_until(key, limit, 1, now) or now, reason, detail)
                 for key, limit, reason, detail in self._rate_checks(domain, bulk)]
        return max(holds, key=lambda h: h.until)

    def sweep(self) -> set[str]:
        """Domains whose line was dropped because its messages stopped coming back (their
        backlog was deleted): mail held behind it should be looked at again now."""
        return self.pacer.sweep(self.clock.now())

    def _share(self, bulk: bool) -> float:
        return share_of(self.limits, bulk)

    def daily_cap(self, domain: str, today: int, provider: str = WHOLE) -> tuple[int | None, HoldReason]:
        first = self._first(domain, provider)
        first_day = day_of(first) if first is not None else None
        cap = warmup_cap(self.limits.warmup.schedule, self.warmup_day(domain, today, provider))
        if cap is not None:
            return cap, HoldReason.WARMUP
        previous = [self._sent(domain, provider, today - i) for i in range(1, SPIKE_DAYS + 1)]
        history = 0 if first_day is None else today - first_day
        schedule = self.limits.warmup.schedule
        return (spike_cap(self.limits.spike.max_growth, previous, history,
                          schedule[0] if schedule else SPIKE_FLOOR), HoldReason.SPIKE)

    def _sent(self, domain: str, provider: str, day: int) -> int:
        """Recipients delivered that day on the ramp; a provider's ramp also counts what the
        whole domain's ramp carried (before the caps were per provider: nobody knows to
        which provider, so it counts against each), so switching loses no day's volume."""
        own = self._volumes.get((ramp(domain, provider), day), 0)
        return own + (self._volumes.get((domain, day), 0) if provider else 0)

    def warmup_day(self, domain: str, today: int, provider: str = WHOLE) -> int:
        first = self._first(domain, provider)
        return warmup_day(day_of(first) if first is not None else None, today,
                          self._unhealthy.get(domain, ()))

    def _first(self, domain: str, provider: str) -> float | None:
        """The ramp's first send; a provider without one of its own continues the ramp the
        whole domain had before its caps were per provider (an upgrade, or per_provider
        turned on), so a domain already warmed up is not warmed up again."""
        first = self._first_send.get(ramp(domain, provider))
        return first if first is not None or not provider else self._first_send.get(domain)

    def _count(self, domain: str, provider: str, recipients: int, bulk: bool, now: float) -> None:
        """Recipients granted: in flight until `delivered`, and in the rate windows."""
        key = ramp(domain, provider)
        self._in_flight[key] = self._in_flight.get(key, 0) + recipients
        rate = self.limits.rate_for(domain)
        if rate is not None:                      # no limit, nothing to remember
            self._windows.record(domain, recipients, now, rate.period)
        if bulk:
            self._windows.record(domain + "#bulk", recipients, now, self.limits.bulk.rate.period)
            if rate is not None:
                self._windows.record(domain + "#share", recipients, now, rate.period)

    def delivered(self, domain: str, recipients: int, attempted: int | None = None,
                  provider: str = WHOLE) -> None:
        """Recipients of `provider` the route accepted (of `attempted` sent): they count toward
        the day's volume; the attempt is no longer in flight."""
        key = ramp(domain, provider)
        left = self._in_flight.get(key, 0) - (recipients if attempted is None else attempted)
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        if recipients <= 0:                       # nothing delivered: the warm-up has not begun
            return
        now = self.clock.now()
        self._volumes[(key, day_of(now))] = self._volumes.get((key, day_of(now)), 0) + recipients
        self._first_send.setdefault(key, self._first(domain, provider) or now)
        for old in [k for k in self._volumes if k[1] < day_of(now) - SPIKE_DAYS - 1]:
            del self._volumes[old]

    def uncount(self, domain: str, recipients: int, at: float, provider: str = WHOLE) -> None:
        """Take back deliveries `delivered` counted at `at` that were counted already."""
        key = (ramp(domain, provider), day_of(at))
        if key in self._volumes:
            self._volumes[key] = max(0, self._volumes[key] - recipients)

    def status(self, domain: str, provider: str = WHOLE) -> dict:
        """What `relay domains list|show` shows of a domain's ramp (of one provider)."""
        today = day_of(self.clock.now())
        cap, reason = self.daily_cap(domain, today, provider)
        pause = self._paused.get(domain)
        sent = self._sent(domain, provider, today)
        return {"state": f"paused ({pause[0]})" if pause else "active",
                "warmup_day": self.warmup_day(domain, today, provider),
                "today": sent, "cap": cap,
                "cap_reason": reason.value if cap is not None else None,
                "next_release": (today + 1) * DAY if cap is not None and sent >= cap else None,
                "rate": (self.limits.rate_for(domain).text if self.limits.rate_for(domain) else None)}

    def ramps(self, domain: str) -> list[str]:
        """The providers the domain has a ramp for (WHOLE when caps are not per provider)."""
        return sorted({key.partition(" ")[2] for key in self._first_send
                       if key.partition(" ")[0] == domain})

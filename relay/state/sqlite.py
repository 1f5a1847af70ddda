"""The embedded governance state: `State` on the spool's SQLite database (`tables.py`).

One relay process at a time decides for a domain (the delivery process), so the governor's
counters live in its memory (`Governor`), loaded from the database when it first decides
and written back as outcomes are recorded; the event loop makes each `reserve` atomic. The
listener process counts campaigns in memory the same way. Every write goes through the
spool's one writer thread, in submission order: a write a caller does not wait for (a
campaign count, an outcome) is durable when the spool write submitted after it is.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections import OrderedDict
from typing import Awaitable

from relay.clock import Clock, day_of
from relay.config import Config
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.governor.bulk import BUCKETS_PER_WINDOW, CampaignCounter
from relay.governor.governor import Governor, Grant
from relay.governor.reputation import Rates, judge
from relay.governor.warmup import SPIKE_DAYS
from relay.spool.db import Database
from relay.state import (DMARC_RETENTION, DomainStatus, FeedbackResult, Outcome, new_reservation,
                         tables)
from relay.state import status, suppressions
from relay.state.suppression_filter import SuppressionFilter
from relay.state.suppressions import Entry, SuppressionReason
from relay.watch.aggregate import AggregateReport

SUPPRESS_AT_ONCE = {
    FeedbackKind.BOUNCED_HARD: SuppressionReason.HARD_BOUNCE,
    FeedbackKind.COMPLAINED: SuppressionReason.COMPLAINT,
    FeedbackKind.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
}
NEGATIVE = (FeedbackKind.COMPLAINED.value, FeedbackKind.BOUNCED_HARD.value)
HEALTH_DAYS = 400          # how far back the warm-up's unhealthy days are read
OUTCOME_KEYS_KEPT = 2 * 86400   # an outcome's key outlives any retry of its write


class SqliteState:
    def __init__(self, db: Database, config: Config, clock: Clock) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        db.now(tables.migrate)
        db.now(lambda conn: conn.executescript(suppressions.SCHEMA))
        self._governor: Governor | None = None
        self._applied: OrderedDict[str, None] = OrderedDict()     # outcomes ended in memory
        self._campaigns: CampaignCounter | None = None
        self._suppressed = SuppressionFilter(db)

    def reconfigure(self, config: Config) -> None:
        """The next decisions follow `config` (a reload keeps the counters and windows)."""
        self.config = config
        if self._governor is not None:
            self._governor.limits = config.limits

    # --- acceptance ---------------------------------------------------------------------
    async def suppression(self, recipient: str, domain: str) -> SuppressionReason | None:
        if self._suppressed.clear(recipient, domain):       # nearly always: no read
            return None
        return await self.db.read_hot(lambda conn: suppressions.lookup(conn, recipient, domain))

    async def campaign_total(self, domain: str, campaign: str, recipients: int) -> int:
        counter = await self._campaign_counter()
        return counter.total(campaign, self.clock.now()) + recipients

    async def record_accepted(self, domain: str, campaign: str, recipients: int,
                              message_id: str) -> None:
        counter = await self._campaign_counter()
        now = self.clock.now()
        counter.add(campaign, recipients, now)

        def write(conn: sqlite3.Connection) -> None:
            tables.count_campaign(conn, campaign, counter.bucket_of(now), recipients)
            if message_id:
                tables.remember_message_id(conn, message_id, domain, now)
        self.db.write_soon(write)

    async def _campaign_counter(self) -> CampaignCounter:
        if self._campaigns is None:
            window = self.config.limits.bulk.window
            since = int((self.clock.now() - window) // (window / BUCKETS_PER_WINDOW))
            buckets = await self.db.write(lambda conn: tables.campaign_buckets(conn, since))
            if self._campaigns is None:
                self._campaigns = CampaignCounter(window, buckets)
        return self._campaigns

    # --- delivery -----------------------------------------------------------------------
    async def reserve(self, domain: str, asked: int | dict[str, int], bulk: bool = False,
                      ticket: str | None = None) -> Grant:
        governor = await self.governor()
        grant = governor.reserve(domain, asked, bulk, ticket)
        return dataclasses.replace(grant, reservation=new_reservation(ticket))

    def record_outcome(self, outcome: Outcome) -> Awaitable[None]:
        """The reservation ends in the governor's memory at the first call for an outcome's
        key in this process (recipients in flight released, those delivered counted); the
        database counts them once, by the key, however often the write is retried, and an
        outcome it already had (sent by an earlier process) is taken back from memory."""
        governor = self._governor
        first_here = governor is not None and outcome.key not in self._applied
        if first_here:
            for provider, attempted in outcome.attempted.items():
                governor.delivered(outcome.domain, outcome.delivered.get(provider, 0),
                                   attempted, provider)
            self._applied[outcome.key] = None
            while len(self._applied) > 10_000:
                self._applied.popitem(last=False)
        if not any(outcome.delivered.values()):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        now = self.clock.now()

        def write(conn: sqlite3.Connection) -> bool:
            if not tables.first_count(conn, outcome.key, now):
                return False
            for provider, count in outcome.delivered.items():
                if count:
                    tables.add_deliveries(conn, outcome.domain, count, now, provider)
            return True
        written = self.db.submit(write)
        if first_here:
            written.add_done_callback(lambda done: self._counted(done, outcome, now))
        return written

    def _counted(self, done: asyncio.Future, outcome: Outcome, at: float) -> None:
        if not done.cancelled() and done.exception() is None and done.result() is False:
            for provider, count in outcome.delivered.items():     # stored before: not again
                self._governor.uncount(outcome.domain, count, at, provider)

    async def governor(self) -> Governor:
        """The delivery process's governor, loaded from the database at its first use."""
        if self._governor is None:
            now = self.clock.now()
            policy = self.config.reputation

            def read(conn: sqlite3.Connection):
                first, volumes = tables.load(conn, day_of(now) - SPIKE_DAYS - 1)
                return (first, volumes, tables.load_windows(conn), tables.paused(conn),
                        _days(tables.unhealthy(conn, policy, now, day_of(now) - HEALTH_DAYS)))
            first, volumes, windows, paused, unhealthy = await self.db.read(read)
            if self._governor is None:
                self._governor = Governor(self.config.limits, self.clock, first, volumes,
                                          windows, unhealthy)
                self._governor.set_paused(paused)
        return self._governor

    async def paused(self) -> dict[str, tuple[str, str]]:
        paused = await self.db.read(tables.paused)
        if self._governor is not None:
            self._governor.set_paused(paused)
        return paused

    async def refresh(self) -> set[str]:
        governor = await self.governor()
        now, policy = self.clock.now(), self.config.reputation
        paused, unhealthy = await self.db.read(lambda conn: (
            tables.paused(conn), _days(tables.unhealthy(conn, policy, now, day_of(now) - HEALTH_DAYS))))
        governor.set_paused(paused)
        governor.set_unhealthy(unhealthy)
        return governor.sweep()

    async def close(self) -> None:
        """Save the rate windows, so the next delivery process starts from them."""
        await self._suppressed.close()
        if self._governor is not None:
            windows = self._governor.export_windows()
            await self.db.write(lambda conn: tables.save_windows(conn, windows))

    # --- feedback -----------------------------------------------------------------------
    async def record_feedback(self, events: list[FeedbackEvent], trusted: bool = True) -> FeedbackResult:
        """Store the new events, suppress, judge the domains touched: one transaction.
        Untrusted events (reports anyone could send to the feedback listener) count only
        when they name a message relay sent, and against that message's domain."""
        now = self.clock.now()
        return await self.db.write(lambda conn: _Feedback(conn, self.config, now).apply(events, trusted))

    async def reevaluate(self) -> FeedbackResult:
        now = self.clock.now()

        def write(conn: sqlite3.Connection) -> FeedbackResult:
            feedback = _Feedback(conn, self.config, now)
            for domain in tables.policy_paused(conn):
                feedback.judge(domain)
            window = self.config.reputation.window
            tables.forget_message_ids(conn, now - window)
            tables.forget_outcomes(conn, now - OUTCOME_KEYS_KEPT)
            # events older than every window that counts them are only history: the event log
            horizon = now - 2 * max(window, self.config.feedback.soft_bounces.within)
            tables.forget_feedback(conn, horizon)
            # a domain no report comes for any more: its last ones go too
            tables.forget_dmarc_reports(conn, now - DMARC_RETENTION)
            return feedback.result
        return await self.db.write(write)

    # --- the operator -------------------------------------------------------------------
    async def pause(self, domain: str, reason: str) -> None:
        now = self.clock.now()
        await self.db.write(lambda conn: tables.pause(conn, domain.lower(), reason, now))

    async def resume(self, domain: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda conn: tables.resume(conn, domain.lower(), now))

    async def suppress(self, recipient: str, domain: str, reason: SuppressionReason) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda conn: suppressions.suppress(conn, recipient, domain, reason, now))

    async def unsuppress(self, recipient: str, domain: str) -> bool:
        return await self.db.write(lambda conn: suppressions.remove(conn, recipient, domain))

    async def suppressions(self, domain: str | None = None) -> list[Entry]:
        return await self.db.read(lambda conn: suppressions.entries(conn, domain))

    async def suppression_counts(self) -> dict[str, int]:
        return await self.db.read(suppressions.counts)

    async def rates(self, domain: str) -> Rates:
        since = self.clock.now() - self.config.reputation.window
        return await self.db.read(lambda conn: _rates(conn, domain, since))

    async def domains(self) -> list[str]:
        return await self.db.read(tables.known_domains)

    async def domain_status(self, domain: str) -> DomainStatus:
        now = self.clock.now()
        today, config = day_of(now), self.config

        def read(conn: sqlite3.Connection):
            first, volumes = tables.load(conn, today - SPIKE_DAYS - 1, domain)
            return (first, volumes, tables.paused(conn),
                    tables.unhealthy(conn, config.reputation, now, today - HEALTH_DAYS, domain),
                    _rates(conn, domain, now - config.reputation.window))
        first, volumes, paused, unhealthy, rates = await self.db.read(read)
        return status.domain_status(config, self.clock, domain, first, volumes, paused,
                                    unhealthy.get(domain, {}), rates)

    async def check(self) -> None:
        try:
            await self.db.read(tables.known_domains)
        except sqlite3.Error as exc:
            raise RuntimeError(f"state not readable: {exc}") from None

    # --- DMARC aggregate reports --------------------------------------------------------
    async def record_dmarc_report(self, report: AggregateReport) -> bool:
        before = self.clock.now() - DMARC_RETENTION
        return await self.db.write(lambda conn: tables.record_dmarc_report(conn, report, before))

    async def dmarc_reports(self, domain: str, since: float) -> list[AggregateReport]:
        return await self.db.read(lambda conn: tables.dmarc_reports(conn, domain, since))

    async def dmarc_totals(self, since: float) -> dict[str, tuple[int, int]]:
        return await self.db.read(lambda conn: tables.dmarc_totals(conn, since))


def _rates(conn: sqlite3.Connection, domain: str, since: float) -> Rates:
    return Rates(tables.delivered_since(conn, domain, since),
                 tables.count_feedback(conn, domain, (FeedbackKind.COMPLAINED.value,), since),
                 tables.count_feedback(conn, domain, (FeedbackKind.BOUNCED_HARD.value,), since))


def _days(unhealthy: dict[str, dict[int, str]]) -> dict[str, set[int]]:
    return {domain: set(days) for domain, days in unhealthy.items()}


class _Feedback:
    """The feedback rules, inside one transaction (`intake.py`'s docstring says them)."""

    def __init__(self, conn: sqlite3.Connection, config: Config, now: float) -> None:
        self.conn, self.config, self.now = conn, config, now
        self.result = FeedbackResult()

    def apply(self, events: list[FeedbackEvent], trusted: bool) -> FeedbackResult:
        touched = set()
        for event in events:
            domain = self._domain(event) if trusted else self._sent_by_us(event)
            if not domain:
                self.result.dropped.append(event)
                continue
            # an untrusted report dates itself: its day's health counts it on the day received
            if not tables.record_feedback(self.conn, event.dedupe_key, domain, event.recipient,
                                          event.kind.value, event.at, self.now,
                                          None if trusted else self.now):
                continue
            self.result.new.append((event, domain))
            touched.add(domain)
            self._suppress(event, domain)
        for domain in sorted(touched):
            self.judge(domain)
        return self.result

    def _domain(self, event: FeedbackEvent) -> str:
        """As the source says it, else by the Message-ID relay saw at acceptance, else the
        only configured domain (if just one)."""
        if event.sender_domain:
            return event.sender_domain.lower()
        known = self._sent_by_us(event)
        if known:
            return known
        return next(iter(self.config.domains)) if len(self.config.domains) == 1 else ""

    def _sent_by_us(self, event: FeedbackEvent) -> str:
        known = tables.domain_of_message(self.conn, event.message_id) if event.message_id else None
        return known or ""

    def _suppress(self, event: FeedbackEvent, domain: str) -> None:
        reason = SUPPRESS_AT_ONCE.get(event.kind)
        if reason is None and event.kind is FeedbackKind.BOUNCED_SOFT:
            rule = self.config.feedback.soft_bounces
            soft = tables.count_feedback(self.conn, domain, (FeedbackKind.BOUNCED_SOFT.value,),
                                         self.now - rule.within, event.recipient)
            if soft >= rule.count:
                reason = SuppressionReason.SOFT_BOUNCES
        if reason is not None and suppressions.suppress(self.conn, event.recipient, domain,
                                                        reason, self.now):
            self.result.suppressed.append((domain, reason.value, event.source))

    def judge(self, domain: str) -> None:
        conn, now, policy = self.conn, self.now, self.config.reputation
        rates = _rates(conn, domain, now - policy.window)
        verdict = judge(rates, policy)
        current = tables.policy_pause(conn, domain)
        if rates.delivered < policy.min_volume:
            return          # too little volume to judge: neither pause nor lift (a paused
                            # domain's volume falls because it is paused)
        resumed = tables.resumed_at(conn, domain)
        if verdict.scope is not None:
            if resumed is not None and tables.newest_feedback(conn, domain, NEGATIVE) <= resumed:
                return                            # the operator resumed it: that holds
            if current != verdict.scope.value:
                tables.set_policy_pause(conn, domain, verdict.scope.value, verdict.reason, now)
                self.result.paused.append((domain, verdict.scope.value, verdict.reason))
        elif verdict.action == "alert":
            self.result.alerts.append((domain, verdict.reason))
        elif current is not None:
            tables.set_policy_pause(conn, domain, None, "", now)
            self.result.lifted.append((domain, verdict.reason))


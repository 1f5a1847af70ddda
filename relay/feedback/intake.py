"""Feedback intake: events from webhooks, DSNs, ARF reports and upstream replies become
suppressions, rates and pauses. Never on an SMTP session's path.

For each new event (duplicates, by their dedupe key, change nothing), in one transaction:
1. store it against its sender domain: as the source names it, else the domain of the
   message with that Message-ID (remembered at acceptance for `reputation.window`), else the
   only configured domain; an event relay cannot attribute is logged and dropped
2. suppress the (recipient, sender domain) pair: at once for a hard bounce, a complaint or an
   unsubscribe; after `feedback.soft_bounces.count` soft bounces within `.within`; a policy
   block (blocked) never suppresses the address
3. judge the domain's rates (`governor/reputation.py`) and set or lift its policy pause; an
   operator's `relay domains resume` holds until a newer complaint or bounce arrives
"""
from __future__ import annotations

import logging
import sqlite3

from relay import metrics
from relay.clock import Clock
from relay.config import Config
from relay.events import Event, emit
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.governor.reputation import Rates, judge
from relay.spool.store import Spool
from relay.state import sqlite as state
from relay.state import suppressions
from relay.state.suppressions import SuppressionReason

log = logging.getLogger("relay.feedback")

SUPPRESS_AT_ONCE = {
    FeedbackKind.BOUNCED_HARD: SuppressionReason.HARD_BOUNCE,
    FeedbackKind.COMPLAINED: SuppressionReason.COMPLAINT,
    FeedbackKind.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
}
NEGATIVE = (FeedbackKind.COMPLAINED.value, FeedbackKind.BOUNCED_HARD.value)


class FeedbackIntake:
    def __init__(self, config: Config, spool: Spool, clock: Clock) -> None:
        self.config = config
        self.spool = spool
        self.clock = clock

    async def record(self, events: list[FeedbackEvent], trusted: bool = True) -> int:
        """Apply `events`; return how many were new. Untrusted events (reports that anyone
        on the internet could send to the feedback listener) count only when they name a
        message relay sent, and against that message's domain."""
        if not events:
            return 0
        now = self.clock.now()
        return await self.spool.write(lambda conn: self._apply(conn, events, now, trusted))

    async def reevaluate(self) -> None:
        """Rates move with time too: look again at the domains paused by policy."""
        now = self.clock.now()

        def write(conn: sqlite3.Connection) -> None:
            for (domain,) in conn.execute("SELECT domain FROM policy_pauses").fetchall():
                self._judge(conn, domain, now)
            window = self.config.reputation.window
            state.forget_message_ids(conn, now - window)
            # events older than every window that counts them are only history: the event log
            horizon = now - 2 * max(window, self.config.feedback.soft_bounces.within)
            conn.execute("DELETE FROM feedback_events WHERE received < ?", (horizon,))
        await self.spool.write(write)

    def _apply(self, conn: sqlite3.Connection, events: list[FeedbackEvent], now: float,
               trusted: bool) -> int:
        new, touched = 0, set()
        for event in events:
            domain = self._domain(conn, event) if trusted else self._sent_by_us(conn, event)
            if not domain:
                log.info("feedback %s from %s names no sender domain; dropped", event.kind, event.source)
                continue
            if not state.record_feedback(conn, event.dedupe_key, domain, event.recipient,
                                         event.kind.value, event.at, now):
                continue
            new += 1
            touched.add(domain)
            metrics.FEEDBACK_EVENTS.labels(event.source, event.kind.value).inc()
            if event.kind is FeedbackKind.COMPLAINED:
                emit(Event.COMPLAINED, domain=domain, source=event.source,
                     reason=event.reason or None)
            self._suppress(conn, event, domain, now)
        for domain in touched:
            self._judge(conn, domain, now)
        return new

    def _domain(self, conn: sqlite3.Connection, event: FeedbackEvent) -> str:
        """The sender domain an event counts against: as the source says it, else by the
        Message-ID relay saw at acceptance, else the only configured domain (if just one)."""
        if event.sender_domain:
            return event.sender_domain.lower()
        if event.message_id:
            known = state.domain_of_message(conn, event.message_id)
            if known:
                return known
        return next(iter(self.config.domains)) if len(self.config.domains) == 1 else ""

    @staticmethod
    def _sent_by_us(conn: sqlite3.Connection, event: FeedbackEvent) -> str:
        known = state.domain_of_message(conn, event.message_id) if event.message_id else None
        return known or ""

    def _suppress(self, conn: sqlite3.Connection, event: FeedbackEvent, domain: str, now: float) -> None:
        reason = SUPPRESS_AT_ONCE.get(event.kind)
        if reason is None and event.kind is FeedbackKind.BOUNCED_SOFT:
            rule = self.config.feedback.soft_bounces
            soft = state.count_feedback(conn, domain, (FeedbackKind.BOUNCED_SOFT.value,),
                                        now - rule.within, event.recipient)
            if soft >= rule.count:
                reason = SuppressionReason.SOFT_BOUNCES
        if reason is not None and suppressions.suppress(conn, event.recipient, domain, reason, now):
            emit(Event.SUPPRESSED, domain=domain, reason=reason.value, source=event.source)

    def _judge(self, conn: sqlite3.Connection, domain: str, now: float) -> None:
        policy = self.config.reputation
        since = now - policy.window
        rates = Rates(state.delivered_since(conn, domain, since),
                      state.count_feedback(conn, domain, (FeedbackKind.COMPLAINED.value,), since),
                      state.count_feedback(conn, domain, (FeedbackKind.BOUNCED_HARD.value,), since))
        verdict = judge(rates, policy)
        current = state.policy_pause(conn, domain)
        if rates.delivered < policy.min_volume:
            return          # too little volume to judge: neither pause nor lift (a paused
                            # domain's volume falls because it is paused)
        resumed = state.resumed_at(conn, domain)
        if verdict.scope is not None:
            if resumed is not None and state.newest_feedback(conn, domain, NEGATIVE) <= resumed:
                return                            # the operator resumed it: that holds
            if current != verdict.scope.value:
                state.set_policy_pause(conn, domain, verdict.scope.value, verdict.reason, now)
                log.warning("%s: %s paused by reputation: %s", domain, verdict.scope.value, verdict.reason)
                emit(Event.PAUSED, domain=domain, scope=verdict.scope.value, reason=verdict.reason)
        elif verdict.action == "alert":
            log.warning("%s: reputation alert: %s", domain, verdict.reason)
        elif current is not None:
            state.set_policy_pause(conn, domain, None, "", now)
            log.info("%s: back under the reputation limits (%s); pause lifted", domain, verdict.reason)
            emit(Event.RESUMED, domain=domain, reason=verdict.reason)

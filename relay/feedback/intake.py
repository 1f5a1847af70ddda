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

from relay import metrics
from relay.events import Event, emit
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.state import FeedbackResult, State

log = logging.getLogger("relay.feedback")


class FeedbackIntake:
    """The rules run inside the state, as one atomic operation (`State.record_feedback`);
    this says what they did: logs, events and metrics, once committed."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def record(self, events: list[FeedbackEvent], trusted: bool = True) -> int:
        """Apply `events`; return how many were new. Untrusted events (reports that anyone
        on the internet could send to the feedback listener) count only when they name a
        message relay sent, and against that message's domain."""
        if not events:
            return 0
        result = await self.state.record_feedback(events, trusted)
        _report(result)
        return len(result.new)

    async def reevaluate(self) -> None:
        """Rates move with time too: look again at the domains paused by policy."""
        _report(await self.state.reevaluate())


def _report(result: FeedbackResult) -> None:
    for event in result.dropped:
        log.info("feedback %s from %s names no sender domain; dropped", event.kind, event.source)
    for event, domain in result.new:
        metrics.FEEDBACK_EVENTS.labels(event.source, event.kind.value).inc()
        if event.kind is FeedbackKind.COMPLAINED:
            emit(Event.COMPLAINED, domain=domain, source=event.source, reason=event.reason or None)
    for domain, reason, source in result.suppressed:
        emit(Event.SUPPRESSED, domain=domain, reason=reason, source=source)
    for domain, scope, why in result.paused:
        log.warning("%s: %s paused by reputation: %s", domain, scope, why)
        emit(Event.PAUSED, domain=domain, scope=scope, reason=why)
    for domain, why in result.alerts:
        log.warning("%s: reputation alert: %s", domain, why)
    for domain, why in result.lifted:
        log.info("%s: back under the reputation limits (%s); pause lifted", domain, why)
        emit(Event.RESUMED, domain=domain, reason=why)

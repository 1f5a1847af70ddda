"""The governance state, behind one interface: everything that governance, feedback,
suppression and pauses read or write goes through a `State`; nothing else in relay touches
their storage. The spool keeps only messages and recipients.

Implementations: `sqlite.SqliteState`, the embedded default, in the spool's database (its
tables are `tables.py`'s); a shared one for a fleet of relays (Redis, DESIGN "State") is a
second class with the same methods. The contract, which `tests/unit/state/test_contract.py` holds every
implementation to:
- every method is async; time comes from the state's clock (the store's own where it has
  one), never from the caller's, except for the times an event itself carries;
- one governance decision is one atomic operation: `reserve` (pause, rates, bulk pace,
  warm-up and spike caps, counted at once), `record_outcome`, `record_feedback` (store the
  events, suppress, judge the domain's pause);
- writes are idempotent: an outcome is keyed by queue id and attempt (which name its
  recipients), a feedback event by its dedupe key, a suppression by (recipient, domain), a
  DMARC aggregate report by (domain, org, report id); a retried call counts once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Protocol

from relay.clock import DAY
from relay.feedback.events import FeedbackEvent
from relay.governor.governor import Grant
from relay.governor.reputation import Rates
from relay.model import unpredictable
from relay.state.suppressions import Entry, SuppressionReason
from relay.watch.aggregate import AggregateReport

DMARC_RETENTION = 180 * DAY   # reports whose period ended longer ago are forgotten


def new_reservation(ticket: str | None) -> str:
    """A grant's name, unique to it (its message's id, and a token: after a crash the same
    message comes again), which its outcome carries as its key."""
    return f"{ticket or '-'}:{unpredictable(6).hex()}"


class StateError(Exception):
    """The state cannot answer or take a write now (a shared store unreachable): what a
    caller that must not give up (an outcome write) retries on, as on a spool error."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt delivered, to count toward the daily volumes: `attempted` and
    `delivered` recipients per provider ("" when caps are per domain)."""
    key: str                                   # the grant's reservation: counted once
    domain: str
    attempted: dict[str, int]
    delivered: dict[str, int]


@dataclass(slots=True)
class FeedbackResult:
    """What `record_feedback` did, for the caller's logs, events and metrics."""
    new: list[tuple[FeedbackEvent, str]] = field(default_factory=list)      # (event, domain)
    dropped: list[FeedbackEvent] = field(default_factory=list)              # no sender domain
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)    # (domain, reason, source)
    paused: list[tuple[str, str, str]] = field(default_factory=list)        # (domain, scope, why)
    lifted: list[tuple[str, str]] = field(default_factory=list)             # (domain, why)
    alerts: list[tuple[str, str]] = field(default_factory=list)             # (domain, why)


@dataclass(frozen=True, slots=True)
class RampStatus:
    """One provider's ramp of a domain ("" : the whole domain's)."""
    provider: str
    warmup_day: int
    today: int                     # recipients delivered today
    cap: int | None
    cap_reason: str | None         # warmup | spike
    next_release: float | None     # when the cap is reached: the next UTC midnight


@dataclass(frozen=True, slots=True)
class DomainStatus:
    domain: str
    state: str                     # active | paused (all) | paused (bulk)
    pause_reason: str
    rate: str | None               # the domain_rate that applies
    ramps: list[RampStatus]
    rates: Rates                   # over reputation.window
    days_not_counted: list[tuple[int, str]]    # (UTC day, why) within the warm-up


class State(Protocol):
    # --- acceptance ---------------------------------------------------------------------
    async def suppression(self, recipient: str, domain: str) -> SuppressionReason | None: ...
    async def campaign_total(self, domain: str, campaign: str, recipients: int) -> int:
        """The campaign's total within `limits.bulk.window` were `recipients` more counted
        (nothing is counted: a submission refused after this must not count)."""
    async def record_accepted(self, domain: str, campaign: str, recipients: int,
                              message_id: str) -> None:
        """A submission is being stored: count its recipients toward its campaign, and
        remember Message-ID -> sender domain, to attribute feedback that names only the
        message. Submitted at once, durable with the spool write submitted after it."""

    # --- delivery -----------------------------------------------------------------------
    async def reserve(self, domain: str, asked: int | dict[str, int], bulk: bool,
                      ticket: str | None) -> Grant: ...
    def record_outcome(self, outcome: Outcome) -> Awaitable[None]:
        """End an attempt's reservation: its recipients are no longer in flight, those
        delivered count toward the day's volumes. Submitted at once (so a spool write made
        next can share its commit), durable when the awaitable resolves; calling it again
        with the same outcome (a retried write) counts nothing more."""
    async def paused(self) -> dict[str, tuple[str, str]]:
        """domain -> (scope "all" | "bulk", reason), as the state has them now."""
    async def refresh(self) -> set[str]:
        """Re-read what other processes change (pauses, day health); the domains whose rate
        line was dropped (their held mail should be looked at again)."""
    async def close(self) -> None: ...

    # --- feedback -----------------------------------------------------------------------
    async def record_feedback(self, events: list[FeedbackEvent], trusted: bool) -> FeedbackResult: ...
    async def reevaluate(self) -> FeedbackResult:
        """Rates move with time too: judge the paused domains again; forget old events."""

    # --- the operator -------------------------------------------------------------------
    async def pause(self, domain: str, reason: str) -> None: ...
    async def resume(self, domain: str) -> bool: ...
    async def suppress(self, recipient: str, domain: str, reason: SuppressionReason) -> bool: ...
    async def unsuppress(self, recipient: str, domain: str) -> bool: ...
    async def suppressions(self, domain: str | None = None) -> list[Entry]: ...
    async def suppression_counts(self) -> dict[str, int]: ...
    async def rates(self, domain: str) -> Rates: ...
    async def domains(self) -> list[str]:
        """The sender domains the state knows (has sent for, or paused)."""
    async def domain_status(self, domain: str) -> DomainStatus: ...
    async def check(self) -> None:
        """Raise unless the state answers a read (`/readyz`)."""

    # --- DMARC aggregate reports (DESIGN "Reputation watch") ------------------------------
    async def record_dmarc_report(self, report: AggregateReport) -> bool:
        """Store one aggregate report under its domain (lowercase); False when a report with
        the same (org_name, report_id) is already stored for that domain (a duplicate:
        nothing changes). Atomic; forgets that domain's reports whose period ended more than
        DMARC_RETENTION ago (by the state's clock). No outbox: a state that cannot take it
        raises StateError, and whoever sent the report retries on our 451."""
    async def dmarc_reports(self, domain: str, since: float) -> list[AggregateReport]:
        """The domain's reports whose period ends at or after `since`, oldest first (by
        begin, then end)."""
    async def dmarc_totals(self, since: float) -> dict[str, tuple[int, int]]:
        """domain -> (aligned, failing) messages summed over the reports ending at or after
        `since`, for every domain with such reports. Called at every Prometheus scrape: it
        decodes no report (each one's totals are kept beside its body)."""

"""Reputation: complaint and bounce rates per sender domain, and what they call for.

Over `reputation.window`, per sender domain: complaints / recipients delivered and hard
bounces / recipients delivered (REFERENCE: Gmail's 0.10% limit and 0.30% hard stop; Brevo
suspends around 2% hard bounces). Only a domain with at least `min_volume` deliveries in the
window is judged, so three complaints on a first small send do not pause anyone. Above
`limit` -> `on_limit` (default: pause the domain's bulk mail), above `stop` -> `on_stop`
(default: pause all of it); back under both limits, a policy pause is lifted.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.config import Reputation


class Scope(enum.StrEnum):
    BULK = "bulk"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Rates:
    delivered: int
    complaints: int
    bounces: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.delivered if self.delivered else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str | None          # pause_bulk | pause_all | alert | None (all is well)
    reason: str

    @property
    def scope(self) -> Scope | None:
        return {"pause_bulk": Scope.BULK, "pause_all": Scope.ALL}.get(self.action or "")


def judge(rates: Rates, policy: Reputation) -> Verdict:
    if rates.delivered < max(policy.min_volume, 1):
        return Verdict(None, f"{rates.delivered} delivered, under min_volume {policy.min_volume}")
    described = (f"complaint rate {rates.complaint_rate:.2%}, bounce rate {rates.bounce_rate:.2%} "
                 f"over {rates.delivered} delivered")
    if (rates.complaint_rate > policy.complaint_rate.stop
            or rates.bounce_rate > policy.bounce_rate.stop):
        return Verdict(policy.on_stop, described + " (above stop)")
    if (rates.complaint_rate > policy.complaint_rate.limit
            or rates.bounce_rate > policy.bounce_rate.limit):
        return Verdict(policy.on_limit, described + " (above limit)")
    return Verdict(None, described)


def day_verdict(complaints: int, bounces: int, paused: bool, delivered: int,
                policy: Reputation) -> str:
    """Why a day does not count toward the warm-up ("" when it does): a pause held part of
    it, or its complaint or hard-bounce rate went over the limit (that day's feedback over
    that day's deliveries; any feedback on a day without deliveries)."""
    why = ["paused"] if paused else []
    for count, what, limit in ((complaints, "complaint(s)", policy.complaint_rate.limit),
                               (bounces, "hard bounce(s)", policy.bounce_rate.limit)):
        if count > limit * delivered:
            why.append(f"{count} {what} for {delivered} delivered, over {limit:.2%}")
    return "; ".join(why)


def with_pause(days: dict[int, str], first_day: int, last_day: int) -> None:
    """Add a pause that held the days from `first_day` to `last_day` to `days`' reasons."""
    for day in range(first_day, last_day + 1):
        if not days.get(day, "").startswith("paused"):
            days[day] = "; ".join(filter(None, ["paused", days.get(day)]))

"""The fleet's Lua scripts and their callers (`Scripts`): each governance decision is one
script on one sender domain's keys, which share the hash tag `relay:{d:<domain>}` (`prefix`),
so the scripts stay valid on Redis Cluster. Time inside a script is Redis's `TIME` (tests
pass theirs). `decide` is `Governor.decide` (held to its answers by
`tests/unit/state/test_redis_decide.py`), `record_feedback` the embedded state's feedback
rules (`test_redis_feedback.py`), `dmarc` stores one DMARC aggregate report; a reservation
expires after `RESERVATION_LIFETIME`, so the recipients a node had in flight when it died do
not count forever. `redis.py`'s RedisState calls them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from redis.asyncio import Redis

from relay.clock import DAY, day_of
from relay.config import Config, Limits, Reputation
from relay.feedback.events import FeedbackEvent
from relay.governor.governor import Decision, Hold, HoldReason, cap_detail, rate_checks, share_of
from relay.governor.warmup import SPIKE_FLOOR
from relay.state import Outcome

_LUA = resources.files("relay.state").joinpath("lua")
_COMMON = _LUA.joinpath("common.lua").read_text()
_DECIDE = _COMMON + _LUA.joinpath("decide.lua").read_text()
_OUTCOME = _COMMON + _LUA.joinpath("outcome.lua").read_text()
_HEALTH = _COMMON + _LUA.joinpath("health.lua").read_text()
_FEEDBACK = _HEALTH + _LUA.joinpath("feedback.lua").read_text()
PAUSE_SCRIPT = _HEALTH + _LUA.joinpath("pause.lua").read_text()
REFILL_SCRIPT = _HEALTH + _LUA.joinpath("refill.lua").read_text()
DMARC_SCRIPT = _COMMON + _LUA.joinpath("dmarc.lua").read_text()
RESERVATION_LIFETIME = 3600.0      # a node that died with recipients in flight: they go


def horizon(config: Config) -> float:
    """How long feedback events are kept (seen, and in the rates' sets)."""
    return 2 * max(config.reputation.window, config.feedback.soft_bounces.within)


def prefix(domain: str) -> str:
    """The domain's keys' common start; the braces make it their hash tag."""
    return f"relay:{{d:{domain}}}"


class Scripts:
    """`Governor.decide` on Redis: one script call per decision."""

    def __init__(self, client: Redis) -> None:
        self._script = client.register_script(_DECIDE)
        self._outcome = client.register_script(_OUTCOME)
        self._feedback = client.register_script(_FEEDBACK)

    async def decide(self, limits: Limits, domain: str, wanted: dict[str, int], bulk: bool,
                     reservation: str, now: float | None = None, grace: float = 0.0,
                     known_epoch: float | None = None) -> Decision:
        """`grace`: after the domain's keys are made (first, or after Redis lost them),
        nothing is granted that long; `Decision.epoch` says when they were made."""
        checks = rate_checks(limits, domain, bulk)
        schedule = limits.warmup.schedule
        args: list = ["" if now is None else repr(now), reservation, RESERVATION_LIFETIME,
                      repr(share_of(limits, bulk)), ",".join(map(str, schedule)),
                      "" if limits.spike.max_growth is None else repr(limits.spike.max_growth),
                      schedule[0] if schedule else SPIKE_FLOOR, 1 if bulk else 0, repr(grace),
                      "" if known_epoch is None else repr(known_epoch), len(checks)]
        for name, rate, _, _ in checks:
            args += [name, rate.count, repr(rate.period)]
        for provider, n in wanted.items():
            args += [provider, n]
        reply = await self._script(keys=[prefix(domain)], args=args)
        if reply[0] == b"paused":
            return Decision(dict.fromkeys(wanted, 0), None, 0, None, reply[1].decode())
        if reply[0] == b"epoch":
            return Decision(dict.fromkeys(wanted, 0), None, 0, None, None, float(reply[1]), True)
        granted = dict(zip(wanted, (int(n) for n in reply[:len(wanted)])))
        reason, cap, sent, provider, rest, until, check, at, epoch = (
            v.decode() if isinstance(v, bytes) else v for v in reply[len(wanted):])
        cap_hold = None
        if reason:
            why = HoldReason(reason)
            cap_hold = Hold((day_of(float(at)) + 1) * DAY, why,
                            cap_detail(limits, why, int(cap), provider, bulk, int(sent)))
        rate_hold = None
        if int(rest):
            _, _, why, detail = checks[int(check) - 1]
            rate_hold = Hold(float(until), why, detail)
        return Decision(granted, cap_hold, int(rest), rate_hold, None, float(epoch))

    async def record_outcome(self, reputation: Reputation, outcome: Outcome, reservation: str,
                             now: float | None = None) -> bool:
        """The reservation ends, and what it delivered counts once (by the outcome's key);
        False when it had been counted."""
        args: list = ["" if now is None else repr(now), outcome.key, reservation,
                      repr(reputation.complaint_rate.limit), repr(reputation.bounce_rate.limit)]
        for provider, attempted in outcome.attempted.items():
            args += [provider, attempted, outcome.delivered.get(provider, 0)]
        return bool(await self._outcome(keys=[prefix(outcome.domain)], args=args))

    async def record_feedback(self, config: Config, domain: str, events: list[FeedbackEvent],
                              trusted: bool, now: float | None = None) -> DomainFeedback:
        """Store the domain's new events, suppress, judge its pause: one script."""
        policy, soft = config.reputation, config.feedback.soft_bounces
        args: list = ["" if now is None else repr(now), 1 if trusted else 0,
                      repr(horizon(config)), repr(policy.window),
                      policy.min_volume, repr(policy.complaint_rate.limit),
                      repr(policy.complaint_rate.stop), repr(policy.bounce_rate.limit),
                      repr(policy.bounce_rate.stop), policy.on_limit, policy.on_stop,
                      soft.count, repr(soft.within)]
        for event in events:
            args += [event.dedupe_key, event.kind.value, event.recipient.strip().lower(),
                     repr(event.at)]
        reply = [v.decode() if isinstance(v, bytes) else v
                 for v in await self._feedback(keys=[prefix(domain)], args=args)]
        new = [bool(flag) for flag in reply[:len(events)]]
        rest = reply[len(events):]
        marker = rest.index("")
        suppressed = [(int(i) - 1, reason) for i, reason in (s.split("|") for s in rest[:marker])]
        action, scope, why = (rest[marker + 1:] + ["", "", ""])[:3]
        return DomainFeedback(new, suppressed, action, scope, why)


@dataclass(frozen=True, slots=True)
class DomainFeedback:
    """What feedback.lua did for one domain's events."""
    new: list[bool]                     # per event: not seen before
    suppressed: list[tuple[int, str]]   # (event index, reason)
    action: str                         # paused | lifted | alert | ""
    scope: str                          # bulk | all, when paused
    reason: str


@dataclass
class Refill:
    """What a node adds to one domain's keys (refill.lua): after Redis lost them, what it
    knows; or its embedded state, once (`relay fleet import`)."""
    windows: list[tuple[str, float, str, int]] = field(default_factory=list)
    volumes: dict[tuple[str, int], int] = field(default_factory=dict)   # (provider, day)
    first: dict[str, float] = field(default_factory=dict)               # provider -> time
    suppressions: list[tuple[str, str]] = field(default_factory=list)   # recipient, "reason|since"
    pause: list[tuple[str, str]] = field(default_factory=list)          # <P>:pause fields
    health: list[tuple[int, int, int, bool]] = field(default_factory=list)  # day, c, b, paused
    events: list[tuple[str, str, str, float]] = field(default_factory=list)  # key, kind, rcpt, at

    def parts(self, size: int) -> list["Refill"]:
        """This refill in calls of at most `size` suppressions and events each (the first
        carries the rest), so a long list is not one huge script call."""
        out = [Refill(self.windows, self.volumes, self.first, self.suppressions[:size],
                      self.pause, self.health, self.events[:size])]
        for at in range(size, max(len(self.suppressions), len(self.events)), size):
            out.append(Refill(suppressions=self.suppressions[at:at + size],
                              events=self.events[at:at + size]))
        return out

    def args(self, now: float, config: Config) -> list:
        reputation = config.reputation
        args: list = [repr(now), repr(reputation.complaint_rate.limit),
                      repr(reputation.bounce_rate.limit), repr(horizon(config))]
        sections: list[list] = [
            [list(w) for w in self.windows],
            [[provider, day, n] for (provider, day), n in self.volumes.items()],
            [[provider, repr(at)] for provider, at in self.first.items()],
            [list(s) for s in self.suppressions],
            [list(p) for p in self.pause],
            [[day, c, b, 1 if paused else 0] for day, c, b, paused in self.health],
            [[key, kind, recipient, repr(at)] for key, kind, recipient, at in self.events]]
        for entries in sections:
            args.append(len(entries))
            for entry in entries:
                args += entry
        return args

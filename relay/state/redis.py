"""The shared governance state of a fleet, on Redis (`state.backend: redis`, DESIGN
"State"): `RedisState`, the `State` interface for every relay of a fleet. Its decisions are
`redis_scripts.py`'s Lua scripts; the node keeps only its own line of held mail, what it
needs while Redis does not answer (the suppressions it has seen; the writes Redis did not
take, in its spool database: `outbox.py`), and what it did, to refill a Redis restarted
empty.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.clock import Clock, day_of
from relay.config import Config
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.governor.bulk import BUCKETS_PER_WINDOW
from relay.governor.governor import (PAUSE_RECHECK, WHOLE, Grant, Hold, HoldReason, Pacer,
                                     grant_of, ramp, rate_checks)
from relay.governor.reputation import Rates, day_verdict, with_pause
from relay.governor.warmup import SPIKE_DAYS
from relay.spool.db import Database
from relay.state import (DMARC_RETENTION, DomainStatus, FeedbackResult, Outcome, StateError,
                         new_reservation, status, tables)
from relay.state.batch import Batch
from relay.state.outbox import Outbox
from relay.state.redis_scripts import (DMARC_SCRIPT, PAUSE_SCRIPT, REFILL_SCRIPT, DomainFeedback,
                                      Refill, Scripts, prefix)
from relay.state.suppressions import Entry, SuppressionReason, normalized
from relay.watch.aggregate import AggregateReport

log = logging.getLogger("relay.state")

MESSAGE_IDS = "relay:mid:"          # + normalized Message-ID -> sender domain
DOMAINS = "relay:domains"           # every sender domain the fleet has state for
PAUSED = "relay:paused"             # the domains with a pause in effect
DMARC_DOMAINS = "relay:dmarc:domains"   # the domains DMARC reports were stored for (dmarc.lua)
NODES = "relay:nodes"               # node name -> when it last said it was alive
HEARTBEAT = 10.0                    # seconds between a node's heartbeats
SEEN_SUPPRESSIONS = 100_000         # remembered by a node, refused while Redis is down
RETRY_DOWN = 2.0                    # after a failure, calls skip Redis this long
EPOCH_GRACE = 15.0                  # a domain's new keys: the nodes refill them this long
KNOWN_DAYS = SPIKE_DAYS + 1         # deliveries a node keeps, to refill the caps' days
LATER = object()                    # a write kept in the outbox, for when Redis answers


@dataclass
class _Known:
    """What one node did for one domain, kept to refill Redis should it lose it: its grants
    still in some rate window, its deliveries on the days the caps look at, first sends."""
    windows: dict[tuple[str, float], dict[float, int]] = dataclasses.field(default_factory=dict)
    volumes: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    first: dict[str, float] = dataclasses.field(default_factory=dict)

    def granted(self, checks: list, units: int, now: float) -> None:
        for name, rate, _, _ in checks:
            quantum = rate.period / 1000
            stamp = math.ceil(now / quantum) * quantum
            window = self.windows.setdefault((name, rate.period), {})
            window[stamp] = window.get(stamp, 0) + units
            for old in [t for t in window if t <= now - rate.period]:
                del window[old]

    def delivered(self, outcome: Outcome, now: float) -> None:
        today = day_of(now)
        for provider, n in outcome.delivered.items():
            if n:
                self.volumes[(provider, today)] = self.volumes.get((provider, today), 0) + n
                self.first.setdefault(provider, now)
        for old in [k for k in self.volumes if k[1] < today - KNOWN_DAYS]:
            del self.volumes[old]


def _answers(method):
    """A call Redis cannot answer raises StateError (and marks Redis down)."""
    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        if self._down():
            raise StateError("redis: not answering")
        try:
            result = await method(self, *args, **kwargs)
        except RedisError as exc:
            self._reachable(False, exc)
            raise StateError(f"redis: {exc}") from None
        self._reachable(True)
        return result
    return call


class RedisState:
    """`State` on Redis, shared by every relay of a fleet. Decisions are the scripts above
    (`Decider`); the node keeps only its own line of held mail (`Pacer`). Pauses and
    suppressions are read through, at each decision and each RCPT: one made on any node
    holds everywhere at once, and there is no message to miss (as pub/sub could)."""

    def __init__(self, client: Redis, config: Config, clock: Clock, db: Database) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.decider = Scripts(client)
        self.batch = Batch(client)                  # the listener's many small calls
        self.pacer = Pacer()
        self._pause = client.register_script(PAUSE_SCRIPT)
        self._seen: OrderedDict[tuple[str, str], SuppressionReason] = OrderedDict()
        self._up = True
        self._retry_at = 0.0
        self.outbox = Outbox(db)
        self._replays = False                       # the listener's: it heartbeats
        self._replay_lock = asyncio.Lock()
        self._replaying: asyncio.Future | None = None
        self._refill = client.register_script(REFILL_SCRIPT)
        self._dmarc = client.register_script(DMARC_SCRIPT)
        self._known: dict[str, _Known] = {}        # domain -> what this node did
        self._epochs: dict[str, float] = {}         # domain -> the epoch it last saw
        self._indexed: set[str] = set()             # domains this node put in DOMAINS
        self._last_paused: dict[str, tuple[str, str]] = {}

    def reconfigure(self, config: Config) -> None:
        self.config = config

    # --- acceptance ---------------------------------------------------------------------
    async def suppression(self, recipient: str, domain: str) -> SuppressionReason | None:
        """Read through; with Redis unreachable, the suppressions this node has seen are
        still refused (the rest is accepted: mail waits in the spool, never lost)."""
        key = (normalized(recipient), normalized(domain))
        if self._down():
            return self._seen.get(key)
        try:
            value = await self.batch("HGET", _supp(domain), key[0])
        except RedisError as exc:
            self._reachable(False, exc)
            return self._seen.get(key)
        self._reachable(True)
        if value:
            self._remember(key, SuppressionReason(value.decode().split("|")[0]))
        return self._seen.get(key) if value else None

    def _remember(self, key: tuple[str, str], reason: SuppressionReason) -> None:
        self._seen[key] = reason
        while len(self._seen) > SEEN_SUPPRESSIONS:
            self._seen.popitem(last=False)

    async def campaign_total(self, domain: str, campaign: str, recipients: int) -> int:
        """The fleet's count; without Redis, this submission's alone (mass-send detection
        is approximate meanwhile; the rates and caps are not: nothing is sent)."""
        if self._down():
            return recipients
        bucket = self._bucket()
        try:
            counts = await self.batch("HGETALL", _campaign(domain, campaign))
        except RedisError as exc:
            self._reachable(False, exc)
            return recipients
        return recipients + sum(int(n) for b, n in counts.items()
                                if int(b) > bucket - BUCKETS_PER_WINDOW)

    async def record_accepted(self, domain: str, campaign: str, recipients: int,
                              message_id: str) -> None:
        await self._or_later("accepted", {"domain": domain, "campaign": campaign,
                                          "recipients": recipients, "message_id": message_id,
                                          "at": self.clock.now()})

    async def _accepted(self, domain: str, campaign: str, recipients: int, message_id: str,
                        at: float) -> None:
        window = self.config.limits.bulk.window
        key = _campaign(domain, campaign)
        commands = [("HINCRBY", key, int(at // (window / BUCKETS_PER_WINDOW)), recipients),
                    ("EXPIRE", key, int(window * 2))]
        if message_id:                 # with its time: the window is the state's clock's
            commands.append(("SET", MESSAGE_IDS + tables.normalize_message_id(message_id),
                             f"{domain}|{at!r}", "EX", int(self.config.reputation.window)))
        await self.batch.many(commands)

    # --- Redis down: what waits for it ----------------------------------------------------
    def _down(self) -> bool:
        """Redis did not answer a moment ago: do not wait for it again on every call."""
        return not self._up and time.monotonic() < self._retry_at

    async def _or_later(self, kind: str, body: dict) -> object:
        """Apply a write now; or, Redis not answering, keep it in the outbox (`LATER`),
        replayed in order once it answers again."""
        if not self._down():
            try:
                result = await self._apply(kind, body)
                self._reachable(True)
                return result
            except RedisError as exc:
                self._reachable(False, exc)
        await self.outbox.add(kind, body)
        return LATER

    async def _apply(self, kind: str, body: dict) -> object:
        """One write of the outbox's kinds, on Redis."""
        if kind == "accepted":
            return await self._accepted(**body)
        if kind == "feedback":
            events = [FeedbackEvent(**dict(e, kind=FeedbackKind(e["kind"]))) for e in body["events"]]
            return await self._record_feedback(events, body["trusted"])
        if kind == "suppress":
            added = await self.client.hsetnx(_supp(body["domain"]), normalized(body["recipient"]),
                                             f"{body['reason']}|{body['at']!r}")
            await self.client.sadd(DOMAINS, normalized(body["domain"]))
            return bool(added)
        raise ValueError(f"unknown outbox entry {kind!r}")

    async def replay(self) -> None:
        """The outbox, in order (the listener's, on each heartbeat and when Redis answers
        again); what fails again waits for the next time."""
        async with self._replay_lock:
            replayed = 0
            while entries := await self.outbox.oldest():
                for id_, kind, body in entries:
                    try:
                        await self._apply(kind, body)
                    except RedisError as exc:
                        self._reachable(False, exc)
                        return
                    except Exception:          # our own bad entry: say so, never loop on it
                        log.exception("an outbox entry Redis cannot take is dropped: %s %s",
                                      kind, json.dumps(body))
                    await self.outbox.done(id_)
                    replayed += 1
            if replayed:
                log.info("the outbox for redis is replayed (%d write(s))", replayed)

    def _bucket(self) -> int:
        window = self.config.limits.bulk.window
        return int(self.clock.now() // (window / BUCKETS_PER_WINDOW))

    # --- delivery -----------------------------------------------------------------------
    async def reserve(self, domain: str, asked: int | dict[str, int], bulk: bool = False,
                      ticket: str | None = None) -> Grant:
        by_provider = isinstance(asked, dict)
        wanted = dict(asked) if by_provider else {WHOLE: asked}
        total = sum(wanted.values())
        now = self.clock.now()
        hold, turn = self.pacer.ahead(self.config.limits, domain, bulk, ticket, total, now)
        if hold is not None:
            return grant_of(dict.fromkeys(wanted, 0), by_provider, hold)
        reservation = new_reservation(ticket)
        if self._down():
            raise StateError("redis: not answering")
        try:
            decision = await self.decider.decide(self.config.limits, domain, wanted, bulk,
                                                 reservation, now, EPOCH_GRACE,
                                                 self._epochs.get(domain))
            if decision.epoch is not None:
                await self._saw_epoch(domain, decision.epoch)
        except RedisError as exc:
            self._reachable(False, exc)
            raise StateError(f"redis: {exc}") from None
        self._reachable(True)
        if decision.refilling:
            return grant_of(decision.granted, by_provider, Hold(
                decision.epoch + EPOCH_GRACE, HoldReason.STATE,
                "the shared state is new (Redis lost it): the nodes refill it first"))
        if decision.paused is not None:
            return grant_of(decision.granted, by_provider,
                            Hold(now + PAUSE_RECHECK, HoldReason.PAUSED, decision.paused))
        if any(decision.granted.values()):
            self._known.setdefault(domain, _Known()).granted(
                rate_checks(self.config.limits, domain, bulk), sum(decision.granted.values()), now)
            try:
                await self._index(domain)
            except RedisError as exc:                       # only: the grant stands
                self._reachable(False, exc)
        grant = self.pacer.grant(self.config.limits, domain, bulk, ticket, turn, total,
                                 by_provider, decision)
        return dataclasses.replace(grant, reservation=reservation)

    def record_outcome(self, outcome: Outcome) -> Awaitable[None]:
        """Sent at once (the caller's spool write can go meanwhile); the reservation named
        by the outcome's key ends, its deliveries count once."""
        return asyncio.ensure_future(self._record_outcome(outcome))

    async def _record_outcome(self, outcome: Outcome) -> None:
        try:
            if await self.decider.record_outcome(self.config.reputation, outcome, outcome.key,
                                                 self.clock.now()):
                self._known.setdefault(outcome.domain, _Known()).delivered(outcome, self.clock.now())
            if any(outcome.delivered.values()):
                await self._index(outcome.domain)
        except RedisError as exc:
            raise StateError(f"redis: {exc}") from None

    @_answers
    async def paused(self) -> dict[str, tuple[str, str]]:
        domains = [d.decode() for d in await self.client.smembers(PAUSED)]
        out = {}
        for domain in sorted(domains):
            op, scope, why = await self.client.hmget(prefix(domain) + ":pause", "op_reason",
                                                     "policy_scope", "policy_reason")
            if op is not None:
                out[domain] = ("all", op.decode())
            elif scope is not None:
                out[domain] = (scope.decode(), why.decode())
            else:
                await self.client.srem(PAUSED, domain)
        self._last_paused = out
        return out

    async def refresh(self) -> set[str]:
        """The node's lines; and for each domain it knows, whether Redis lost its keys
        (a new epoch, or none yet): then this node adds what it knows."""
        if self._known and self._down():
            raise StateError("redis: not answering")
        for domain in list(self._known):
            try:
                epoch = await self.client.get(prefix(domain) + ":epoch")
                await self._saw_epoch(domain, float(epoch) if epoch else None)
            except RedisError as exc:
                self._reachable(False, exc)
                raise StateError(f"redis: {exc}") from None
        return self.pacer.sweep(self.clock.now())

    async def _index(self, domain: str) -> None:
        """The domain in the fleet's index of domains (for listing): once per epoch, not
        one more round trip per message."""
        if domain not in self._indexed:
            await self.client.sadd(DOMAINS, domain)
            self._indexed.add(domain)

    async def _saw_epoch(self, domain: str, epoch: float | None) -> None:
        """The domain's epoch now (None: its keys are gone). Changed or gone since this node
        last saw it, Redis lost them (restarted empty): refill them with what this node
        knows, once per epoch."""
        before = self._epochs.get(domain)
        if epoch == before:
            return
        self._indexed.discard(domain)
        if before is not None:
            await self._refill_domain(domain)
            epoch = float(await self.client.get(prefix(domain) + ":epoch"))
        if epoch is not None:
            self._epochs[domain] = epoch

    async def _refill_domain(self, domain: str) -> None:
        known, now = self._known.get(domain, _Known()), self.clock.now()
        refill = Refill(
            windows=[(name, repr(period), _fmt(stamp), n)
                     for (name, period), entries in known.windows.items()
                     for stamp, n in entries.items()],
            volumes=dict(known.volumes), first=dict(known.first),
            suppressions=[(r, f"{reason.value}|{now!r}") for (r, d), reason in self._seen.items()
                          if d == domain])
        pause = self._last_paused.get(domain)
        if pause is not None and pause[0] == "all":
            refill.pause = [("op_reason", pause[1]), ("op_since", repr(now))]
        elif pause is not None:
            refill.pause = [("policy_scope", pause[0]), ("policy_reason", pause[1]),
                            ("policy_since", repr(now))]
        args = refill.args(now, self.config)
        await self._refill(keys=[prefix(domain)], args=args)
        if pause is not None:
            await self.client.sadd(PAUSED, domain)
        log.warning("%s: the shared state was made anew (Redis restarted empty?): this node "
                    "refilled it with what it knows", domain)

    @_answers
    async def absorb(self, domain: str, refill: Refill) -> None:
        """Add what `refill` holds to the domain's keys (`relay fleet import`, migrate.py)."""
        domain = normalized(domain)
        await self._refill(keys=[prefix(domain)], args=refill.args(self.clock.now(), self.config))
        await self.client.sadd(DOMAINS, domain)
        if any(field in ("op_reason", "policy_scope") for field, _ in refill.pause):
            await self.client.sadd(PAUSED, domain)

    async def close(self) -> None:
        await self.client.aclose()

    # --- feedback -----------------------------------------------------------------------
    async def record_feedback(self, events: list[FeedbackEvent], trusted: bool = True) -> FeedbackResult:
        """Without Redis the events wait in the outbox (each counts once, by its dedupe
        key, when replayed); the result says nothing was recorded yet."""
        result = await self._or_later("feedback", {
            "events": [dataclasses.asdict(e) for e in events], "trusted": trusted})
        return FeedbackResult() if result is LATER else result

    async def _record_feedback(self, events: list[FeedbackEvent], trusted: bool) -> FeedbackResult:
        result = FeedbackResult()
        by_domain: dict[str, list[FeedbackEvent]] = {}
        for event in events:
            domain = await self._domain(event, trusted)
            if domain:
                by_domain.setdefault(domain, []).append(event)
            else:
                result.dropped.append(event)
        for domain, mine in by_domain.items():
            done = await self.decider.record_feedback(self.config, domain, mine, trusted,
                                                      self.clock.now())
            result.new += [(event, domain) for event, new in zip(mine, done.new) if new]
            result.suppressed += [(domain, reason, mine[i].source) for i, reason in done.suppressed]
            await self._report(result, domain, done)
            await self.client.sadd(DOMAINS, domain)
        return result

    async def _domain(self, event: FeedbackEvent, trusted: bool) -> str:
        """As in the embedded state: the source's word (trusted only), else the domain of the
        message with that Message-ID, else the only configured domain (trusted only)."""
        if trusted and event.sender_domain:
            return event.sender_domain.lower()
        if event.message_id:
            known = await self.client.get(MESSAGE_IDS + tables.normalize_message_id(event.message_id))
            if known:
                domain, _, at = known.decode().partition("|")
                if float(at) >= self.clock.now() - self.config.reputation.window:
                    return domain
        if trusted and len(self.config.domains) == 1:
            return next(iter(self.config.domains))
        return ""

    async def _report(self, result: FeedbackResult, domain: str, done: "DomainFeedback") -> None:
        """What the script did, in the result; the index of paused domains follows it."""
        if done.action == "paused":
            result.paused.append((domain, done.scope, done.reason))
            await self.client.sadd(PAUSED, domain)
        elif done.action == "lifted":
            result.lifted.append((domain, done.reason))
        elif done.action == "alert":
            result.alerts.append((domain, done.reason))

    @_answers
    async def reevaluate(self) -> FeedbackResult:
        result = FeedbackResult()
        for domain in (await self.paused()):
            done = await self.decider.record_feedback(self.config, domain, [], True,
                                                      self.clock.now())
            await self._report(result, domain, done)
        return result

    # --- the operator -------------------------------------------------------------------
    @_answers
    async def pause(self, domain: str, reason: str) -> None:
        domain = normalized(domain)
        await self._pause_op(domain, "pause", reason)
        await self.client.sadd(PAUSED, domain)
        await self.client.sadd(DOMAINS, domain)

    @_answers
    async def resume(self, domain: str) -> bool:
        domain = normalized(domain)
        lifted = await self._pause_op(domain, "resume", "")
        await self.client.srem(PAUSED, domain)
        return bool(lifted)

    async def _pause_op(self, domain: str, op: str, reason: str) -> int:
        policy = self.config.reputation
        return await self._pause(keys=[prefix(domain)], args=[
            repr(self.clock.now()), op, reason, repr(policy.complaint_rate.limit),
            repr(policy.bounce_rate.limit)])

    async def suppress(self, recipient: str, domain: str, reason: SuppressionReason) -> bool:
        """Without Redis the suppression holds on this node at once and waits in the
        outbox for the others (True: it is new as far as this node knows)."""
        reason = SuppressionReason(reason)
        added = await self._or_later("suppress", {"recipient": recipient, "domain": domain,
                                                  "reason": reason.value,
                                                  "at": self.clock.now()})
        if added is LATER:
            self._remember((normalized(recipient), normalized(domain)), reason)
            return True
        return bool(added)

    @_answers
    async def unsuppress(self, recipient: str, domain: str) -> bool:
        return bool(await self.client.hdel(_supp(domain), normalized(recipient)))

    @_answers
    async def suppressions(self, domain: str | None = None) -> list[Entry]:
        domains = [normalized(domain)] if domain else sorted(await self.domains())
        out = []
        for d in domains:
            for recipient, value in sorted((await self.client.hgetall(_supp(d))).items()):
                reason, since = value.decode().split("|")
                out.append((recipient.decode(), d, SuppressionReason(reason), float(since)))
        return out

    @_answers
    async def suppression_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, reason, _ in await self.suppressions():
            counts[reason.value] = counts.get(reason.value, 0) + 1
        return counts

    @_answers
    async def rates(self, domain: str) -> Rates:
        now, window = self.clock.now(), self.config.reputation.window
        p = prefix(normalized(domain))
        days = list(range(day_of(now - window), day_of(now) + 1))
        sent = await self.client.hmget(p + ":voltotal", days)
        complaints = await self.client.zcount(p + ":fb:complained", repr(now - window), "+inf")
        bounces = await self.client.zcount(p + ":fb:bounced_hard", repr(now - window), "+inf")
        return Rates(sum(int(n) for n in sent if n), complaints, bounces)

    @_answers
    async def domains(self) -> list[str]:
        return sorted(d.decode() for d in await self.client.smembers(DOMAINS))

    @_answers
    async def domain_status(self, domain: str) -> DomainStatus:
        domain = normalized(domain)
        p, now = prefix(domain), self.clock.now()
        first = {ramp(domain, k.decode()): float(v)
                 for k, v in (await self.client.hgetall(p + ":first")).items()}
        volumes = {}
        for field, n in (await self.client.hgetall(p + ":vol")).items():
            provider, _, day = field.decode().rpartition("|")
            volumes[(ramp(domain, provider), int(day))] = int(n)
        health = {k.decode(): int(v) for k, v in (await self.client.hgetall(p + ":health")).items()}
        sent = {int(k): int(v) for k, v in (await self.client.hgetall(p + ":voltotal")).items()}
        unhealthy: dict[int, str] = {}
        for day in {int(k.partition("|")[0]) for k in health}:
            why = day_verdict(health.get(f"{day}|c", 0), health.get(f"{day}|b", 0),
                              bool(health.get(f"{day}|p")), sent.get(day, 0),
                              self.config.reputation)
            if why:
                unhealthy[day] = why
        pause = {k.decode(): v.decode() for k, v in (await self.client.hgetall(p + ":pause")).items()}
        for which in ("op_since", "policy_since"):
            if which in pause:
                with_pause(unhealthy, day_of(float(pause[which])), day_of(now))
        paused = await self.paused()
        return status.domain_status(self.config, self.clock, domain, first, volumes, paused,
                                    unhealthy, await self.rates(domain))

    async def check(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            self._reachable(False, exc)
            raise StateError(f"redis: {exc}") from None
        self._reachable(True)

    # --- DMARC aggregate reports (dmarc.lua) ----------------------------------------------
    # Each domain's reports are on its own keys (one hash tag: the script is valid on a
    # Cluster); DMARC_DOMAINS, a key of its own, lists the domains for `dmarc_totals`. A
    # domain is listed before its first report is stored, so no stored report goes unlisted
    # (a listed domain whose reports expired only reads as empty).

    @_answers
    async def record_dmarc_report(self, report: AggregateReport) -> bool:
        """No outbox: with Redis unreachable, StateError (the sender retries on our 451)."""
        domain = normalized(report.domain)
        await self.client.sadd(DMARC_DOMAINS, domain)
        return bool(await self._dmarc(keys=[prefix(domain)], args=[
            repr(self.clock.now()), DMARC_RETENTION, _report_key(report), repr(report.end),
            f"{report.aligned}|{report.failing}", report.to_json()]))

    @_answers
    async def dmarc_reports(self, domain: str, since: float) -> list[AggregateReport]:
        p = prefix(normalized(domain))
        keys = await self.client.zrangebyscore(p + ":dmarc:end", since, "+inf")
        bodies = await self.client.hmget(p + ":dmarc", keys) if keys else []
        reports = [AggregateReport.from_json(b) for b in bodies if b is not None]   # None:
        return sorted(reports, key=_oldest_first)                  # forgotten in between

    @_answers
    async def dmarc_totals(self, since: float) -> dict[str, tuple[int, int]]:
        """Two round trips whatever the number of domains; no report is decoded."""
        domains = sorted(d.decode() for d in await self.client.smembers(DMARC_DOMAINS))
        async with self.client.pipeline(transaction=False) as pipe:
            for domain in domains:
                pipe.zrangebyscore(prefix(domain) + ":dmarc:end", since, "+inf")
            keys = await pipe.execute()
        found = [(d, k) for d, k in zip(domains, keys) if k]
        async with self.client.pipeline(transaction=False) as pipe:
            for domain, reports in found:
                pipe.hmget(prefix(domain) + ":dmarc:sum", reports)
            sums = await pipe.execute()
        out = {}
        for (domain, _), values in zip(found, sums):
            pairs = [v.decode().split("|") for v in values if v is not None]
            if pairs:
                out[domain] = (sum(int(a) for a, _ in pairs), sum(int(f) for _, f in pairs))
        return out

    # --- the fleet ----------------------------------------------------------------------
    async def heartbeat(self, node: str) -> None:
        """This node is alive (the listener process says so every `HEARTBEAT` seconds);
        and the node's outbox, written by any of its processes, is replayed from here."""
        self._replays = True
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(NODES, {node: self.clock.now()})
                pipe.zremrangebyscore(NODES, "-inf", self.clock.now() - 86400)
                pipe.expire(NODES, 86400)
                await pipe.execute()
        except RedisError as exc:
            self._reachable(False, exc)
            return
        self._reachable(True)
        await self.replay()

    async def fleet(self) -> dict:
        """`relay fleet status`: Redis's address, whether and how fast it answers, and the
        nodes seen (name -> seconds since their last heartbeat)."""
        started = time.monotonic()
        try:
            await self.client.ping()
            latency = time.monotonic() - started
            nodes = await self.client.zrange(NODES, 0, -1, withscores=True)
            info = await self.client.info("server")
        except RedisError as exc:
            return {"reachable": False, "error": str(exc)}
        now = self.clock.now()
        return {"reachable": True, "latency_ms": round(latency * 1000, 2),
                "redis_version": info.get("redis_version"), "run_id": info.get("run_id"),
                "nodes": {name.decode(): round(now - at, 1) for name, at in nodes}}

    def _reachable(self, up: bool, error: Exception | None = None) -> None:
        """One log line per change: down (and what the node does meanwhile), and back, when
        the outbox is replayed."""
        if not up:
            self._retry_at = time.monotonic() + RETRY_DOWN
        if up == self._up:
            return
        self._up = up
        if up:
            log.warning("redis answers again: governance decisions resume, the writes that "
                        "waited in the outbox are replayed")
            if self._replays:
                self._replaying = asyncio.ensure_future(self.replay())
        else:
            log.error("redis does not answer (%s): mail is accepted into the spool, "
                      "nothing is sent until the shared state grants it, feedback and "
                      "suppressions wait in an outbox", error)


def _fmt(x: float) -> str:
    """A time as the scripts write it (Lua's %.17g), so the window's fields match."""
    return f"{x:.17g}"


def _supp(domain: str) -> str:
    return prefix(normalized(domain)) + ":supp"


def _campaign(domain: str, campaign: str) -> str:
    return prefix(domain) + ":camp:" + campaign


def _report_key(report: AggregateReport) -> str:
    """A DMARC report's field in its domain's keys: (org, report id), unambiguously."""
    return json.dumps(list(report.key), ensure_ascii=False, separators=(",", ":"))


def _oldest_first(report: AggregateReport) -> tuple:
    """As the embedded state orders them."""
    return (report.begin, report.end, report.org_name, report.report_id)

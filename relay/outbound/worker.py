"""The delivery pipeline: from a due message in the spool to an outcome per recipient.

`Delivery.deliver` is the flow, written out once:
1. the scheduler (`_dispatch`) yields a due message; transactional mail goes before bulk
2. load it; a message deleted meanwhile (`relay queue delete`) is simply gone; its
   recipients are grouped by mailbox provider when caps are per provider
   (`limits.warmup.per_provider`); the state grants what of them fits now (pause, domain
   rate, bulk pace, warm-up cap, spike guard: `State.reserve`), and holds the rest until T:
   only the granted recipients go in this transaction, holding is not an attempt, and held
   time never counts toward `spool.max_age`
3. the route carries it over one of its pooled sessions (`max_connections` per route)
4. each recipient's reply is classified: 2xx delivered; 4xx, or no answer at all, is retried
   with exponential backoff and jitter; 5xx bounced; still failing past `spool.max_age`
   expired
5. the reservation ends: what was delivered is counted, the rest released
   (`State.record_outcome`, keyed by this attempt), and the new state is persisted with the
   DSN for what failed for good (one transaction); each write retried alone until taken:
   never a second send because an outcome could not be written, an event is logged and metrics move per outcome; the route's refusals become feedback
   (a dead address is suppressed, the domain's bounce rate moves)

Delivery is at-least-once: a crash between the route's 250 and step 5 re-sends the message
after restart, which is what every MTA does rather than risk losing it.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Awaitable, Callable

from relay import metrics
from relay.checks import content
from relay.clock import Clock
from relay.config import Config
from relay.events import Event, emit
from relay.feedback.classify import classify, feedback_kind, parse_reply
from relay.feedback.events import FeedbackEvent, dedupe_key
from relay.feedback.intake import FeedbackIntake
from relay.governor.governor import WHOLE, Grant, Hold, HoldReason
from relay.governor.providers import ProviderMap
from relay.state import Outcome, State, StateError
from relay.model import QueuedMessage, Stream, Recipient, RecipientState, new_queue_id
from relay.outbound import dsn
from relay.outbound.retry import Backoff
from relay.outbound.upstream import RouteClient, RouteSession, RouteUnavailable, UpstreamReply
from relay.replies import R451_ROUTE_UNAVAILABLE
from relay.signing.dkim import Signer
from relay.spool.store import Spool

log = logging.getLogger("relay.delivery")

_IDLE_CLOSE = 30.0        # close a route session unused this long
_COOLDOWN = 60.0          # a message whose attempt failed unexpectedly waits this long
_PAUSES_REFRESH = 2.0     # how often `relay domains pause/resume` is read from the state
_REJUDGE = 60.0           # how often domains paused by the reputation rules are judged again
_BATCH = 0.05             # the scheduler's shortest sleep: paced mail goes a few at a time
_STATE_RETRY = 5.0        # a message the state could not decide on is looked at again after
_RECORD_RETRY = 0.1       # an outcome the spool refused is written again after this, doubling
_RECORD_RETRY_MAX = 5.0   # ... up to this


def upstream_feedback(message: QueuedMessage, recipients: list[Recipient], now: float) -> list[FeedbackEvent]:
    """The final refusals of this attempt as feedback (`feedback/bounce_rules.yaml`): a 5xx
    dead address is a hard bounce and gets suppressed, a policy block is not; an expired
    recipient is a soft bounce. A deferral (still queued) is not an outcome yet."""
    events = []
    for r in recipients:
        if r.state not in (RecipientState.BOUNCED, RecipientState.EXPIRED) or not r.reply[:1].isdigit():
            continue
        code, enhanced, text = parse_reply(r.reply)
        kind = feedback_kind(code, classify(code, enhanced, text))
        events.append(FeedbackEvent(kind, r.address, "upstream", now, message.id, r.reply, enhanced,
                                    dedupe_key("upstream", message.id, r.address, message.attempts),
                                    message.domain))
    return events


def _count(providers: list[str]) -> dict[str, int]:
    """Recipients per provider, in the order they first appear."""
    asked: dict[str, int] = {}
    for provider in providers:
        asked[provider] = asked.get(provider, 0) + 1
    return asked


def _granted(pending: list[Recipient], providers: list[str] | None,
             grant: Grant) -> list[tuple[Recipient, str]]:
    """The recipients that go now, with their provider: the first `grant.count`, or of each
    provider's, the first as many as its grant."""
    if providers is None or grant.by_provider is None:
        return [(r, WHOLE) for r in pending[:grant.count]]
    left = dict(grant.by_provider)
    chosen = []
    for recipient, provider in zip(pending, providers):
        if left.get(provider, 0) > 0:
            left[provider] -= 1
            chosen.append((recipient, provider))
    return chosen


def _outcome(key: str, domain: str, chosen: list[tuple[Recipient, str]], answered: bool) -> Outcome:
    """What an attempt counts toward the daily volumes, per provider (nothing delivered
    when the route did not answer)."""
    attempted: dict[str, int] = {}
    delivered: dict[str, int] = {}
    for recipient, provider in chosen:
        attempted[provider] = attempted.get(provider, 0) + 1
        if answered and recipient.state is RecipientState.DELIVERED:
            delivered[provider] = delivered.get(provider, 0) + 1
    return Outcome(key, domain, attempted, delivered)


class Delivery:
    def __init__(self, config: Config, spool: Spool, state: State, routes: dict[str, RouteClient],
                 signer: Signer, clock: Clock, backoff: Backoff,
                 intake: FeedbackIntake | None = None, providers: ProviderMap | None = None,
                 poll_interval: float = 1.0) -> None:
        self.config = config
        self.spool = spool
        self.state = state
        self.routes = routes
        self.signer = signer
        self.clock = clock
        self.backoff = backoff
        self.intake = intake
        self.providers = providers
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._cooldown: dict[str, float] = {}       # not before: messages that failed oddly
        self._paused_checked = 0.0
        self._pauses_read = False                   # the spool's pauses not read yet
        self._paused: dict = {}
        self._judged = 0.0
        self._queues: dict[str, asyncio.Queue[str]] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    # --- the flow ---------------------------------------------------------------------
    async def deliver(self, message_id: str, session: RouteSession) -> None:
        """Steps 2-5 for one message (see the module docstring)."""
        message = await self.spool.load(message_id)
        if message is None or message.next_attempt > self.clock.now():
            return                     # deleted meanwhile, or already deferred again
        route = self.routes[message.route]
        pending = message.pending()
        bulk = message.stream is Stream.BULK
        providers = await self._providers(message.domain, pending)
        asked = _count(providers) if providers else len(pending)
        try:
            grant = await self.state.reserve(message.domain, asked, bulk, message.id)
        except StateError as exc:           # fail closed: what is not granted does not go
            await self._hold(message, Hold(self.clock.now() + _STATE_RETRY, HoldReason.STATE,
                                           str(exc)))
            return
        if not grant.count:
            await self._hold(message, grant.hold)
            return
        chosen = _granted(pending, providers, grant)    # the rest waits for its turn (grant.hold)
        batch = [recipient for recipient, _ in chosen]
        message.attempts += 1
        key = grant.reservation            # this attempt's: counted once, however retried
        emit(Event.ATTEMPT, id=message.id, domain=message.domain, route=route.name,
             attempt=message.attempts, rcpts=len(batch))
        started = time.monotonic()
        answered = False
        try:
            try:
                answers = await session.send(message.mail_from, [r.address for r in batch],
                                             message.body, message.mail_options)
            except RouteUnavailable as exc:
                answers = [UpstreamReply.of(R451_ROUTE_UNAVAILABLE.format(detail=exc))] * len(batch)
            metrics.DELIVERY_DURATION.labels(route.name).observe(time.monotonic() - started)
            now = self.clock.now()
            self._classify(message, batch, answers, now)
            answered = True
        finally:
            # the reservation ends here, once: what was delivered counts, the rest is released
            # (nothing counts when the attempt failed unexpectedly: it is tried again later)
            outcome = _outcome(key, message.domain, chosen, answered)
            counted = self.state.record_outcome(outcome)
        held = self._rest_waits(message, batch, grant.hold, now) if grant.hold else None
        failed = [r for r in batch if r.state in (RecipientState.BOUNCED, RecipientState.EXPIRED)]
        dsns = []
        if failed and message.mail_from:
            loop = asyncio.get_running_loop()   # signing is CPU work: off the event loop
            dsns.append(await loop.run_in_executor(
                None, self._dsn, message, failed, route.description, now))
        spooled = self.spool.record_attempt(message, dsns, held.reason.value if held else "")
        # the spool's write first: a shared state that does not answer must not keep the
        # message's own outcome from being durable (a crash would send it again)
        await self._written(message.id, spooled, lambda: self.spool.record_attempt(
            message, dsns, held.reason.value if held else ""))
        await self._written(message.id, counted, lambda: self.state.record_outcome(outcome))
        if self.intake is not None:
            await self.intake.record(upstream_feedback(message, batch, now))
        for extra in dsns:
            emit(Event.DSN_SENT, id=message.id, dsn_id=extra.id, domain=message.domain,
                 route=message.route, rcpts=len(failed))
            self.wake()

    def _rest_waits(self, message: QueuedMessage, batch: list[Recipient], hold: Hold,
                    now: float) -> Hold | None:
        """The recipients the governor did not grant wait until `hold.until`, as a held
        message would (not an attempt, and the wait never counts toward max_age), unless some
        of this batch were deferred: then the message comes back at their backoff, and asks
        for all its recipients again."""
        rest = len(message.pending()) - sum(r.state is RecipientState.QUEUED for r in batch)
        metrics.GOVERNOR_DEFERRALS.labels(hold.reason.value).inc()
        emit(Event.DEFERRED, id=message.id, domain=message.domain, route=message.route,
             by="governor", reason=hold.reason.value, detail=hold.detail, until=round(hold.until),
             rcpts=rest)
        if any(r.state is RecipientState.QUEUED for r in batch):
            return None
        message.held += max(0.0, hold.until - now)
        message.next_attempt = hold.until
        return hold

    async def _written(self, message_id: str, first: Awaitable, again: Callable[[], Awaitable]) -> None:
        """Step 5's writes, each retried until taken (`first`, then `again()`): the route has
        answered, and an outcome given up on would send the message again (a full disk must
        never cause a second send). Both are idempotent, and each is retried alone, so one
        that was taken is never written twice. This worker takes no other message
        meanwhile; acceptance keeps `spool.min_free` for these writes, so it waits only
        while space is freed."""
        delay = _RECORD_RETRY
        failing = False
        write = first
        while True:
            try:
                await write
            except (sqlite3.Error, StateError) as exc:
                if not failing:
                    log.error("%s: the outcome of its attempt cannot be written (%s); retrying "
                              "until it can, before this worker sends anything else",
                              message_id, exc)
                failing = True
                await self.clock.sleep(delay)
                delay = min(delay * 2, _RECORD_RETRY_MAX)
                write = again()
                continue
            if failing:
                log.warning("%s: the outcome of its attempt is written at last", message_id)
            return

    async def _providers(self, domain: str, pending: list[Recipient]) -> list[str] | None:
        """Each pending recipient's mailbox provider, when the domain's daily caps are per
        provider; None when they are the domain's."""
        if self.providers is None or not self.config.limits.caps_per_provider:
            return None
        return await self.providers.providers([r.address for r in pending])

    async def _hold(self, message: QueuedMessage, hold: Hold) -> None:
        """Step 2's "wait until T": not an attempt, and the wait never counts toward max_age."""
        now = self.clock.now()
        message.held += max(0.0, hold.until - max(now, message.next_attempt))
        message.next_attempt = hold.until
        await self.spool.record_hold(message, hold.reason.value)
        metrics.GOVERNOR_DEFERRALS.labels(hold.reason.value).inc()
        emit(Event.DEFERRED, id=message.id, domain=message.domain, route=message.route,
             by="governor", reason=hold.reason.value, detail=hold.detail, until=round(hold.until))

    def _classify(self, message: QueuedMessage, pending: list[Recipient],
                  answers: list[UpstreamReply], now: float) -> None:
        expired = now - message.created - message.held >= self.config.spool.max_age
        for recipient, answer in zip(pending, answers):
            recipient.reply = str(answer)
            if 200 <= answer.code < 300:
                recipient.state = RecipientState.DELIVERED
                event = Event.DELIVERED
            elif answer.code >= 500:
                recipient.state = RecipientState.BOUNCED
                event = Event.BOUNCED
            elif expired:
                recipient.state = RecipientState.EXPIRED
                event = Event.EXPIRED
            else:
                event = Event.DEFERRED
            metrics.DELIVERIES.labels(message.route, event.value).inc()
            emit(event, id=message.id, domain=message.domain, route=message.route,
                 reply=recipient.reply)
        message.next_attempt = now + self.backoff.delay(message.attempts)

    def _dsn(self, original: QueuedMessage, failed: list[Recipient], route_description: str,
             now: float) -> QueuedMessage:
        body = dsn.build(original, failed, self.config.server.hostname, route_description, now)
        parsed = content.parse(body)
        signatures = self.signer.sign(original.domain, parsed.headers, parsed.body, now)
        body = parsed.serialize(signatures)
        options = [] if original.mail_from.isascii() else ["SMTPUTF8"]
        if not body.isascii():
            options.append("BODY=8BITMIME")
        return QueuedMessage(id=new_queue_id(now), mail_from="",
                             recipients=[Recipient(original.mail_from)], domain=original.domain,
                             route=original.route, body=body, created=now, next_attempt=now,
                             mail_options=options)

    # --- scheduling -------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        for name, route in self.routes.items():
            size = self.config.routes[name].max_connections
            self._queues[name] = asyncio.Queue(maxsize=size * 2)
            for _ in range(size):
                self._tasks.append(asyncio.create_task(self._work(route, self._queues[name])))
        self._tasks.append(asyncio.create_task(self._dispatch()))

    async def _dispatch(self) -> None:
        """Step 1: feed due messages to their route's workers, transactional first."""
        while not self._stopping:
            try:
                if not await self._dispatch_once():
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the delivery scheduler failed; retrying shortly")
                await asyncio.sleep(self.poll_interval)

    async def _dispatch_once(self) -> int:
        """Hand the due messages not already in hand to their workers; how many were."""
        self._wake.clear()
        now = self.clock.now()
        if now - self._paused_checked >= _PAUSES_REFRESH:
            try:
                await self._refresh(now)
            except StateError:                    # the state says so itself, once; mail
                pass                              # waits for its grants meanwhile
            self._paused_checked = now
        held = {i for i, until in self._cooldown.items() if until > now}
        self._cooldown = {i: self._cooldown[i] for i in held}
        skip = self._inflight | held
        due = await self.spool.due(now, 64 + len(skip))
        handed = 0
        for item in (d for d in due if d.id not in skip):
            queue = self._queues.get(item.route)
            if self._stopping:
                break
            if queue is None:
                log.error("message %s names route %r, which is not configured; it waits",
                          item.id, item.route)
                self._cooldown[item.id] = now + _COOLDOWN
                continue
            self._inflight.add(item.id)
            await queue.put(item.id)
            handed += 1
        return handed

    async def _refresh(self, now: float) -> None:
        """What other processes and nodes change: the reputation rules' judgement (every
        `_REJUDGE`), pauses (releasing the mail a lifted one held), day health, rate lines."""
        if self.intake is not None and now - self._judged >= _REJUDGE:
            await self.intake.reevaluate()        # rates move with time too
            self._judged = now
        paused = await self.state.paused()
        if paused != self._paused or not self._pauses_read:
            if paused != self._paused:
                log.info("paused domains now: %s", ", ".join(
                    f"{d} ({s})" for d, (s, _) in sorted(paused.items())) or "none")
            # mail held by a pause that is lifted (or narrowed to bulk) is due now; at
            # start, also that of pauses lifted while this process was not running
            lifted = [d for d, (scope, _) in self._paused.items()
                      if paused.get(d, ("",))[0] != scope]
            for domain in (lifted if self._pauses_read else [None]):
                released = await self.spool.release_held(self.clock.now(), paused, domain)
                if released:
                    log.info("released %d message(s) held by a lifted pause", released)
            self._paused = paused
            self._pauses_read = True
        for domain in await self.state.refresh():   # a deleted backlog: nothing to wait behind
            released = await self.spool.release_rate_holds(domain, self.clock.now())
            log.info("%s: the rate line's messages stopped coming back; %d held message(s) "
                     "looked at again", domain, released)

    async def _idle(self) -> None:
        """Nothing to hand out: wait for the next due time, or a wake-up (a message queued, an
        attempt finished), at most `poll_interval`. While due messages are in hand (or
        cooling down), look again every `_BATCH`; mail paced closer than that goes a few at
        a time. (Waiting for the wake-ups alone cost 10% of end-to-end throughput.)"""
        now = self.clock.now()
        wait = self.poll_interval
        next_due = await self.spool.next_due_time()
        if next_due is not None:
            wait = max(0.0, min(wait, next_due - now))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(wait, _BATCH))
        except asyncio.TimeoutError:
            pass

    async def _work(self, route: RouteClient, queue: asyncio.Queue[str]) -> None:
        session = route.session()
        try:
            while True:
                try:
                    message_id = await asyncio.wait_for(queue.get(), timeout=_IDLE_CLOSE)
                except asyncio.TimeoutError:
                    await session.close()
                    continue
                try:
                    await self.deliver(message_id, session)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivery of %s failed unexpectedly; it stays queued", message_id)
                    self._cooldown[message_id] = self.clock.now() + _COOLDOWN
                finally:
                    self._inflight.discard(message_id)
                    if not self._stopping:
                        self.wake()
        finally:
            await session.close()

    async def stop(self, timeout: float = 30.0) -> None:
        """Let attempts in progress finish (bounded), then stop the workers."""
        self._stopping = True
        self.wake()
        for queue in self._queues.values():       # queued but not started: they stay due
            while not queue.empty():
                self._inflight.discard(queue.get_nowait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

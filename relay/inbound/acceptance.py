"""The acceptance pipeline: everything relay decides inside an SMTP session.

1. connect    admission limits (421 4.7.0); on a listener whose `auth` is optional, a client
              inside a user's `networks` is that user (on `auth: required`, 530 until AUTH)
2. AUTH       only after TLS (the server enforces it); credentials -> principal (535 5.7.8);
              failures from one address are slowed, then refused for a while (454 4.7.0)
3. MAIL FROM  the spool's filesystem has `spool.min_free` left (452 4.3.1, so deliveries can
              always record their outcome); the principal may use this address and its
              domain is configured (550 5.7.1);
              the domain's SPF authorizes the route that will carry it (550 5.7.23, 550 5.5.2
              for a broken record, 451 4.4.3 when DNS cannot say)
4. RCPT TO    syntax (553 5.1.3); the suppression list of the sender domain (550 5.7.1
              unsubscribed or complained, 550 5.1.1 hard bounce); count limit (452 4.5.3)
5. DATA       size (552 5.3.4, enforced while reading); exactly one From whose address the
              principal may use (550 5.6.0 / 550 5.7.1), its DMARC policy and alignment
              looked at in the background (a warning, never a refusal); Date and Message-ID
              added when missing; lines over 998 characters re-encoded (quoted-printable);
              the route's headers added; mass-send classification: past
              `limits.bulk.recipients_threshold` recipients of one campaign within the window
              the message is bulk, and must carry RFC 8058 headers (`require`: 550 5.7.1
              without List-Unsubscribe; `inject`: one copy per recipient with relay's
              one-click URL); the deliverability lint (`content.mode`) started in the lint
              process: with `refuse_bulk`, bulk mail waits for it, and scoring over
              `content.max_score` is refused (550 5.7.1 naming the top three findings);
              other mail does not wait (findings never refuse it); Received added; DKIM
              signature(s) added (over those headers too); space checked again for this
              message (452 4.3.1); stored durably in the spool; then `250 2.0.0 Ok: queued
              as <id>`. The `queued` event is logged once the lint's report is in (findings
              counted, score and rules in the event), or at once with the lint off.

Failing to sign or to store is always a 4xx: the client keeps the message. Nothing here
knows about aiosmtpd; `inbound/handler.py` adapts it.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from relay import metrics, replies
from relay.checks import content, line_length, sender
from relay.checks.admission import Admission
from relay.checks.auth import AuthThrottle, Users
from relay.checks.dmarc import DmarcMonitor
from relay.checks.spf_gate import SpfGate
from relay.clock import Clock
from relay.config import Config
from relay.errors import PolicyError, TemporaryError
from relay.events import Event, emit
from relay.feedback.reports import ACCEPTED, NotAReport, read_report
from relay.governor.bulk import campaign_key
from relay.lint import Report
from relay.model import Principal, QueuedMessage, Recipient, Stream, new_queue_id
from relay.replies import Reply
from relay.signing.dkim import Signer
from relay.state.suppressions import SuppressionReason
from relay.spool.space import SpaceGuard
from relay.spool.store import Spool
from relay.state import State, StateError
from relay.watch.dmarc_reports import NotAggregateReport, ReportError

if TYPE_CHECKING:
    from relay.feedback.intake import FeedbackIntake
    from relay.watch.dmarc_intake import DmarcIntake
    from relay.web.tokens import UnsubscribeTokens

log = logging.getLogger("relay.acceptance")

MAX_LINTING = 64          # messages whose lint report has not come yet; past that DATA waits


@dataclass(slots=True)
class SessionState:
    """What acceptance knows of one SMTP session."""
    ip: str
    listener: str
    tls: bool = False
    auth_required: bool = True      # the listener's `auth: required`: no `networks` principal
    helo: str = ""
    principal: Principal | None = None
    sender_domain: str = ""
    recipients: int = 0
    via_auth: bool = False
    feedback: bool = False          # a `role: feedback` listener's session
    smtputf8: bool = False
    queue_id: str = ""


class Acceptance:
    def __init__(self, config: Config, users: Users, throttle: AuthThrottle, admission: Admission,
                 signer: Signer, spool: Spool, clock: Clock, signing_pool: Executor,
                 spf_gate: SpfGate, dmarc: DmarcMonitor, state: State,
                 space: SpaceGuard, tokens: "UnsubscribeTokens | None" = None,
                 intake: "FeedbackIntake | None" = None, on_queued=lambda message: None,
                 lint: "Callable[[bytes, bool], Awaitable[Report | None]] | None" = None,
                 on_links: "Callable[[tuple[str, ...]], None] | None" = None,
                 dmarc_reports: "DmarcIntake | None" = None) -> None:
        self.config = config
        self.users = users
        self.throttle = throttle
        self.admission = admission
        self.signer = signer
        self.spool = spool
        self.clock = clock
        self.signing_pool = signing_pool
        self.spf_gate = spf_gate
        self.dmarc = dmarc
        self.state = state
        self.space = space
        self.tokens = tokens
        self.intake = intake
        self.on_queued = on_queued
        self.lint = lint                # `lint/process.py` LintProcess.check
        self.max_linting = MAX_LINTING
        self._linting: set[asyncio.Task] = set()
        self._lint_behind = False
        self.on_links = on_links        # bulk mail's link hosts, for the blocklist watch
        self.dmarc_reports = dmarc_reports

    # 1. connect
    def connect(self, session: SessionState) -> None:
        self.admission.open(session.ip)
        if not session.auth_required:
            session.principal = self.users.by_network(session.ip)

    def disconnect(self, session: SessionState) -> None:
        self.admission.close(session.ip)

    # 2. AUTH
    async def authenticate(self, session: SessionState, username: str, password: bytes) -> Principal:
        self.throttle.check(session.ip)
        self.throttle.verifying(session.ip, +1)
        try:
            principal = await asyncio.to_thread(self.users.verify, username, password)
        finally:
            self.throttle.verifying(session.ip, -1)
        if principal is None:
            delay = self.throttle.failed(session.ip)
            log.warning("AUTH failed for %r from %s", username, session.ip)
            await self.clock.sleep(delay)
            raise PolicyError(replies.R535_AUTH_FAILED, f"bad credentials for {username!r}")
        self.throttle.succeeded(session.ip)
        session.principal = principal
        session.via_auth = True
        return principal

    # 3. MAIL FROM
    async def mail_from(self, session: SessionState, address: str, smtputf8: bool = False) -> Reply:
        if session.feedback:                      # reports come from anyone, <> included
            session.recipients = 0
            return replies.R250_SENDER_OK
        if session.principal is None:
            raise PolicyError(replies.R530_AUTH_REQUIRED)
        await self.space.check()
        session.smtputf8 = smtputf8
        domain = sender.authorize(session.principal, address, self.config.domains,
                                  smtputf8=smtputf8)
        await self.spf_gate.authorize(domain, self.config.domains[domain].route)
        session.sender_domain = domain
        session.recipients = 0
        return replies.R250_SENDER_OK

    # 4. RCPT TO
    async def rcpt_to(self, session: SessionState, address: str) -> Reply:
        sender.check_syntax(address, session.smtputf8)
        if session.feedback:                      # any local mailbox: nothing is relayed
            return replies.R250_RECIPIENT_OK
        reason = await self.state.suppression(address, session.sender_domain)
        if reason is not None:
            reply = _SUPPRESSION_REPLIES.get(reason, replies.R550_SUPPRESSED)
            raise PolicyError(reply.format(address=address, domain=session.sender_domain),
                              f"suppressed ({reason.value})")
        if session.recipients >= self.config.server.max_recipients:
            raise TemporaryError(replies.R452_TOO_MANY_RECIPIENTS)
        session.recipients += 1
        return replies.R250_RECIPIENT_OK

    # 5. DATA
    async def data(self, session: SessionState, mail_from: str, recipients: list[str],
                   data: bytes, mail_options: list[str]) -> Reply:
        if session.feedback:
            return await self.feedback_report(data)
        assert session.principal is not None
        now = self.clock.now()
        queue_id = session.queue_id = new_queue_id(now)
        emit(Event.RECEIVED, id=queue_id, listener=session.listener, ip=session.ip,
             user=session.principal.username, domain=session.sender_domain,
             rcpts=len(recipients), size=len(data))
        parsed = content.parse(data)
        domain = sender.authorize(session.principal, parsed.from_address, self.config.domains,
                                  header=True)
        self.dmarc.observe(domain, [k.domain for k in self.signer.keys_for(domain)])
        content.add_missing(parsed, queue_id, now)
        await self._limit_lines(parsed, queue_id)
        route_name = self.config.domains[session.sender_domain].route
        # the campaign is the application's: named before the route's own headers (a route
        # tag like X-Mailin-Tag would make all its mail one campaign)
        campaign = campaign_key(session.sender_domain, parsed.headers, parsed.from_address)
        parsed.headers.extend((k.encode(), b" " + v.encode())
                              for k, v in self.config.routes[route_name].headers.items())
        total = await self.state.campaign_total(session.sender_domain, campaign, len(recipients))
        stream = Stream.BULK if total > self.config.limits.bulk.recipients_threshold else Stream.TRANSACTIONAL
        linting = await self._start_lint(data, stream)
        if linting is not None and self.config.content.mode == "refuse_bulk" \
                and stream is Stream.BULK:                    # its verdict decides the reply
            self._refuse_content(await linting)
        messages = []
        for group, extra in self._unsubscribe_groups(parsed, stream, session.sender_domain, recipients):
            copy = content.Parsed(parsed.headers + extra, parsed.body, parsed.from_address)
            copy_id = queue_id if not messages else new_queue_id(now)
            trace = content.received(session.helo, session.ip, self.config.server.hostname,
                                     _protocol(session), copy_id, group, now)
            signatures = await self._sign(domain, copy, now, queue_id)
            messages.append(QueuedMessage(
                id=copy_id, mail_from=mail_from, recipients=[Recipient(r) for r in group],
                domain=session.sender_domain, route=route_name, stream=stream,
                body=copy.serialize(prepend=signatures + [trace]), created=now, next_attempt=now,
                mail_options=[o for o in mail_options if o in ("SMTPUTF8", "BODY=8BITMIME")]))
        message_id = b"".join(parsed.get(b"Message-ID")[:1]).decode("ascii", "replace")
        await self.space.check(sum(len(m.body) for m in messages))    # low meanwhile?
        await self.state.record_accepted(session.sender_domain, campaign, len(recipients),
                                         message_id)
        await self._store(messages)
        reply = replies.R250_QUEUED.format(queue_id=queue_id)

        def queued(lint: Report | None) -> None:
            for message in messages:
                emit(Event.QUEUED, id=message.id, domain=message.domain, route=route_name,
                     stream=stream.name.lower(), user=session.principal.username,
                     rcpts=len(message.recipients), size=len(message.body),
                     lint_score=lint.score if lint else None,
                     lint=",".join(f.rule for f in lint.findings if f.score) or None if lint else None,
                     reply=str(reply))
        if linting is None:
            queued(None)
        elif linting.done():
            queued(_report_of(linting))
        else:                                     # the 250 goes now; the event with the report
            linting.add_done_callback(lambda done: queued(_report_of(done)))
        metrics.MESSAGES_RECEIVED.labels(session.listener, stream.name.lower()).inc()
        self.on_queued(messages[0])
        return reply

    async def feedback_report(self, data: bytes) -> Reply:
        """A `role: feedback` listener's DATA: a DSN (RFC 3464) or ARF report (RFC 5965)
        becomes feedback events, counted only when they name (by Message-ID) a message relay
        sent, so a forged report cannot suppress addresses or pause a domain; a DMARC
        aggregate report about a domain relay sends for is stored (`watch/dmarc_intake.py`);
        anything else is refused (550 naming what the address takes or what is wrong with
        the report), never accepted and dropped."""
        try:
            events = read_report(content.normalize_line_endings(data), self.clock.now())
        except NotAReport as exc:
            return await self._dmarc_report(data, exc)
        new = await self.intake.record(events, trusted=False) if events else 0
        return replies.R250_FEEDBACK.format(events=len(events), new=new)

    async def _dmarc_report(self, data: bytes, not_feedback: NotAReport) -> Reply:
        if self.dmarc_reports is None:
            raise PolicyError(replies.R550_NOT_A_REPORT.format(accepted=_FEEDBACK_TAKES),
                              f"not a report: {not_feedback}")
        try:
            ingested = await self.dmarc_reports.ingest(data)
        except NotAggregateReport as exc:
            raise PolicyError(replies.R550_NOT_A_REPORT.format(accepted=_FEEDBACK_TAKES),
                              f"not a report: {not_feedback}; {exc}") from None
        except ReportError as exc:
            raise PolicyError(replies.R550_BAD_DMARC_REPORT.format(problem=_one_line(exc)),
                              f"DMARC report refused: {exc}") from None
        except StateError as exc:
            raise TemporaryError(replies.R451_REPORT_NOT_STORED, str(exc)) from None
        return replies.R250_DMARC_REPORTS.format(reports=len(ingested.reports), new=ingested.new)

    def _unsubscribe_groups(self, parsed: content.Parsed, stream: Stream, domain: str,
                            recipients: list[str]) -> list[tuple[list[str], list[content.Header]]]:
        """Who gets which copy, with which added headers (RFC 8058, before signing)."""
        has_header = bool(parsed.get(b"List-Unsubscribe"))
        mode = self.config.unsubscribe_mode
        if stream is Stream.TRANSACTIONAL or has_header or mode == "off":
            return [(recipients, [])]
        if mode == "require":
            bulk = self.config.limits.bulk
            raise PolicyError(replies.R550_BULK_NEEDS_UNSUBSCRIBE.format(
                threshold=bulk.recipients_threshold, window=_human(bulk.window)))
        base = self.config.feedback.unsubscribe.base_url.rstrip("/")
        return [([r], [(b"List-Unsubscribe", f" <{base}/{self.tokens.make(r, domain)}>".encode()),
                       (b"List-Unsubscribe-Post", b" List-Unsubscribe=One-Click")])
                for r in recipients]

    async def _start_lint(self, data: bytes, stream: Stream) -> "asyncio.Task[Report | None] | None":
        """The deliverability lint (`content.mode`) of this message, started in the lint
        process (off the event loop and off this process's GIL), or None with the lint off.
        Its report counts the findings when it comes; no report (the lint failed or is
        late) never costs the message. With `max_linting` messages already waiting for
        their reports, this one waits for room: the lint's backlog, and the memory it holds,
        stay bounded when mail comes faster than the lint reads it."""
        if self.config.content.mode == "off" or self.lint is None:
            return None
        if len(self._linting) >= self.max_linting:
            if not self._lint_behind:
                log.warning("the lint has not answered for %d message(s): new mail waits for it",
                            len(self._linting))
                self._lint_behind = True
            while len(self._linting) >= self.max_linting:
                await asyncio.wait(set(self._linting), return_when=asyncio.FIRST_COMPLETED)
        if len(self._linting) < self.max_linting // 2:
            self._lint_behind = False             # caught up: a next backlog is logged again
        task = asyncio.ensure_future(self._lint(data, stream))
        self._linting.add(task)
        task.add_done_callback(self._linting.discard)
        return task

    async def _lint(self, data: bytes, stream: Stream) -> Report | None:
        report = await self.lint(data, stream is Stream.BULK)
        if report is None:
            return None
        for finding in report.findings:
            metrics.CONTENT_FINDINGS.labels(finding.rule).inc()
        if report.links and self.on_links is not None:
            self.on_links(report.links)
        return report

    def _refuse_content(self, report: Report | None) -> None:
        """`refuse_bulk`: 550 5.7.1 for bulk mail scoring over `content.max_score`."""
        content = self.config.content
        if report is not None and report.score > content.max_score:
            raise PolicyError(replies.R550_CONTENT.format(
                score=report.score, max_score=content.max_score,
                findings=", ".join(f"{f.rule} {f.score:g}" for f in report.top(3))),
                f"content score {report.score:g}")

    async def _limit_lines(self, parsed: content.Parsed, queue_id: str) -> None:
        """RFC 5322 §2.1.1: no line over 998 characters reaches a provider that would fold
        it (breaking DKIM); re-encoding is CPU work, off the event loop like signing."""
        if not line_length.too_long(parsed.body):
            return
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.signing_pool, line_length.shorten, parsed):
            log.info("%s: lines over %d characters re-encoded as quoted-printable",
                     queue_id, line_length.LIMIT)

    async def _sign(self, domain: str, parsed: content.Parsed, now: float, queue_id: str) -> list[bytes]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.signing_pool, self.signer.sign, domain,
                                              parsed.headers, parsed.body, now)
        except Exception as exc:
            log.error("DKIM signing failed for %s (%s): %s", queue_id, domain, exc)
            raise TemporaryError(replies.R451_SIGNING_FAILED, str(exc)) from exc

    async def _store(self, messages: list[QueuedMessage]) -> None:
        try:
            await self.spool.enqueue(*messages)
        except Exception as exc:
            log.error("spooling %s failed: %s", messages[0].id, exc)
            raise TemporaryError(replies.R451_SPOOL_FAILED, str(exc)) from exc


# What a feedback listener takes, as its refusal of anything else names it.
_FEEDBACK_TAKES = ACCEPTED.replace(" and ", ", ") + " and DMARC aggregate reports (RFC 7489)"

_SUPPRESSION_REPLIES = {
    SuppressionReason.UNSUBSCRIBED: replies.R550_UNSUBSCRIBED,
    SuppressionReason.HARD_BOUNCE: replies.R550_HARD_BOUNCED,
    SuppressionReason.COMPLAINT: replies.R550_COMPLAINED,
    SuppressionReason.SOFT_BOUNCES: replies.R550_SOFT_BOUNCED,
}


def _one_line(exc: Exception, limit: int = 300) -> str:
    """An error's text fit for a reply line: printable ASCII, bounded."""
    text = " ".join(str(exc).split()).encode("ascii", "replace").decode()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _protocol(session: SessionState) -> str:
    """RFC 3848 protocol names for the Received field."""
    return "ESMTP" + ("S" if session.tls else "") + ("A" if session.via_auth else "")


def _report_of(linting: "asyncio.Task[Report | None]") -> Report | None:
    """A finished lint's report; None when it was cancelled (a stop) or failed (logged)."""
    if linting.cancelled():
        return None
    if linting.exception() is not None:
        log.error("the lint of a message failed: %r", linting.exception())
        return None
    return linting.result()

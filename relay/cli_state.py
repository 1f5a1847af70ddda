"""The commands on the governance state: `relay domains list|show|pause|resume`,
`relay suppressions list|add|remove|export`, `relay feedback ingest`. Each goes through the
`State` interface (`relay/state/`), the same operations the running relay uses.
"""
from __future__ import annotations

import asyncio
import csv
import datetime
import sys
from typing import Awaitable, Callable, TypeVar

from relay import operations
from relay.cli import when_local
from relay.clock import DAY, SystemClock, day_of
from relay.config import Config
from relay.state import DomainStatus, State, StateError

T = TypeVar("T")


def _with_state(config: Config, use: Callable[[State, object], Awaitable[T]]) -> T:
    """Run `use(state, spool)` on the configured stores, and close them."""
    from relay.compose import open_stores
    spool, state = open_stores(config, SystemClock())
    spool.start()

    async def run() -> T:
        try:
            return await use(state, spool)
        finally:
            await state.close()
    try:
        return asyncio.run(run())
    finally:
        spool.close()


def _when_utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _day(day: int) -> str:
    return datetime.datetime.fromtimestamp(day * DAY, datetime.timezone.utc).strftime("%Y-%m-%d")


def cmd_domains(args, config: Config) -> int:
    if args.action in ("pause", "resume", "show") and not args.domain:
        print(f"relay: domains {args.action} needs a domain", file=sys.stderr)
        return 1
    domain = (args.domain or "").lower()
    if args.action == "pause":
        _with_state(config, lambda state, _: operations.pause_domain(state, domain, operations.cli_operator()))
        print(f"{domain}: paused (its mail is accepted and waits in the queue)")
        return 0
    if args.action == "resume":
        if _with_state(config, lambda state, _: operations.resume_domain(state, domain, operations.cli_operator())):
            print(f"{domain}: resumed (held mail leaves within seconds)")
        else:
            print(f"{domain}: was not paused")
        return 0

    async def statuses(state: State, spool) -> tuple[list[DomainStatus], dict]:
        names = [domain] if args.action == "show" else sorted(set(config.domains) | set(await state.domains()))
        return [await state.domain_status(d) for d in names], spool.queued_by_domain()
    found, queued = _with_state(config, statuses)
    if args.action == "show":
        _show(found[0], config, queued.get(domain, (0, None)))
        return 0
    print(f"{'DOMAIN':<24} {'ROUTE':<10} {'STATE':<14} {'DAY':>4} {'TODAY':>7} {'CAP':>14} "
          f"{'RATE':<10} {'QUEUED':>6} {'COMPLAINTS':>10} {'BOUNCES':>8}")
    for s in found:
        day = min(r.warmup_day for r in s.ramps)
        today = sum(r.today for r in s.ramps)
        caps = [r for r in s.ramps if r.cap is not None]
        cap = ("-" if not caps else f"{caps[0].cap} ({caps[0].cap_reason})" if len(s.ramps) == 1
               else f"{len(s.ramps)} providers")
        route = config.domains[s.domain].route if s.domain in config.domains else "(removed)"
        print(f"{s.domain:<24} {route:<10} {s.state:<14} {day:>4} {today:>7} {cap:>14} "
              f"{s.rate or '-':<10} {queued.get(s.domain, (0, None))[0]:>6} "
              f"{_ratio(s.rates.complaints, s.rates.delivered):>10} "
              f"{_ratio(s.rates.bounces, s.rates.delivered):>8}")
    return 0


def _ratio(n: int, delivered: int) -> str:
    return f"{n / delivered:.2%}" if delivered else "-"


def _show(s: DomainStatus, config: Config, queued: tuple[int, float | None]) -> None:
    """`relay domains show D`: the state, each provider's ramp, the days not counted."""
    route = config.domains[s.domain].route if s.domain in config.domains else "(not configured)"
    limits, policy = config.limits, config.reputation
    print(f"{s.domain}: route {route}, {s.state}" + (f": {s.pause_reason}" if s.pause_reason else ""))
    print(f"rate: {s.rate or 'no domain_rate'}; bulk pace {limits.bulk.rate.text}")
    schedule = ", ".join(map(str, limits.warmup.schedule)) or "none"
    per = "per mailbox provider" if limits.caps_per_provider else "for the whole domain"
    print(f"warm-up: [{schedule}], {per}; spike guard: "
          + (f"{limits.spike.max_growth:g}x the 7-day average" if limits.spike.max_growth else "off"))
    print()
    print(f"{'PROVIDER':<12} {'DAY':>4} {'SENT TODAY':>10} {'CAP':>16} NEXT RELEASE")
    for r in s.ramps:
        cap = f"{r.cap} ({r.cap_reason})" if r.cap is not None else "-"
        release = _when_utc(r.next_release) if r.next_release else "now"
        print(f"{r.provider or '(all)':<12} {r.warmup_day:>4} {r.today:>10} {cap:>16} {release}")
    count, due = queued
    print(f"\nqueued: {count} message(s)" + (f"; the next held one is due {_when_utc(due)}" if due else ""))
    rates = s.rates
    print(f"reputation over {policy.window / DAY:g} days: {rates.delivered} delivered, complaint rate "
          f"{_ratio(rates.complaints, rates.delivered)} (limit {policy.complaint_rate.limit:.2%}), "
          f"bounce rate {_ratio(rates.bounces, rates.delivered)} (limit {policy.bounce_rate.limit:.2%})")
    if s.days_not_counted:
        print("\ndays the warm-up did not count:")
        for day, why in s.days_not_counted:
            print(f"  {_day(day)}  {why}")
    elif limits.warmup.schedule:
        print(f"\nevery day since the first send counted toward the warm-up (today: {_day(day_of(SystemClock().now()))})")


def cmd_suppressions(args, config: Config) -> int:
    if args.action in ("add", "remove"):
        if not (args.recipient and args.domain):
            print(f"relay: suppressions {args.action} needs RECIPIENT and --domain", file=sys.stderr)
            return 1
        recipient, domain = args.recipient, args.domain
        by = operations.cli_operator()
        done = _with_state(config, lambda state, _: (
            operations.suppress(state, recipient, domain, by) if args.action == "add"
            else operations.unsuppress(state, recipient, domain, by)))
        verb = {"add": ("suppressed", "was already suppressed"),
                "remove": ("removed", "was not suppressed")}[args.action]
        print(f"{recipient.lower()} for {domain.lower()}: {verb[0] if done else verb[1]}")
        return 0
    rows = _with_state(config, lambda state, _: state.suppressions(args.domain or None))
    if args.action == "export":
        out = csv.writer(sys.stdout)
        out.writerow(["recipient", "domain", "reason", "since"])
        for recipient, domain, reason, since in rows:
            out.writerow([recipient, domain, reason.value, when_local(since)])
        return 0
    for recipient, domain, reason, since in rows:
        print(f"{recipient:<40} {domain:<24} {reason.value:<13} {when_local(since)}")
    print(f"{len(rows)} suppression(s)")
    return 0


def cmd_feedback_ingest(args, config: Config) -> int:
    """A mailbox pipe: one DSN or ARF report on standard input."""
    from relay.feedback.intake import FeedbackIntake
    from relay.feedback.reports import ACCEPTED, NotAReport, read_report
    try:
        events = read_report(sys.stdin.buffer.read(), SystemClock().now())
    except NotAReport as exc:
        print(f"relay: standard input is none of {ACCEPTED}: {exc} (a DMARC aggregate "
              f"report goes to `relay dmarc ingest`)", file=sys.stderr)
        return 1
    if not events:
        print("relay: the report on standard input names no recipient to act on", file=sys.stderr)
        return 1
    new = _with_state(config, lambda state, _: FeedbackIntake(state).record(events))
    kinds = ", ".join(sorted({e.kind.value for e in events}))
    print(f"{len(events)} event(s) ({kinds}), {new} new")
    return 0


def cmd_fleet_status(args, config: Config) -> int:
    """`relay fleet status`: the state backend, and for Redis whether it answers, how fast,
    and the nodes seen; exit 1 when the shared state does not answer."""
    if config.state.backend != "redis":
        print("state: sqlite (embedded, one node: spool.path); no fleet")
        return 0

    async def status(state, _spool) -> dict:
        return await state.fleet()
    found = _with_state(config, status)
    print(f"state: redis ({config.state.url_env}), node {config.state.node or '(hostname)'}")
    if not found["reachable"]:
        print(f"redis: NOT REACHABLE: {found['error']}")
        return 1
    print(f"redis: reachable, {found['latency_ms']} ms, version {found['redis_version']}, "
          f"run id {found['run_id']} (a new id: Redis restarted)")
    print(f"nodes seen in the last day: {len(found['nodes'])}")
    for name, ago in sorted(found["nodes"].items(), key=lambda n: n[1]):
        print(f"  {name:<24} last heartbeat {ago:g} s ago" + ("  (silent)" if ago > 60 else ""))
    return 0


def cmd_fleet_import(args, config: Config) -> int:
    """`relay fleet import`: this node's embedded state (the SQLite tables under spool.path,
    written while it ran with `state.backend: sqlite`) added to the fleet's Redis, once."""
    import socket

    from relay.state.migrate import AlreadyImported, import_embedded
    if config.state.backend != "redis":
        print("relay: fleet import: state.backend is sqlite; set it to redis (and "
              f"{config.state.url_env}) first: the import reads this node's embedded state "
              "and writes it to Redis", file=sys.stderr)
        return 1
    node = config.state.node or socket.gethostname()
    try:
        done = _with_state(config, lambda state, spool: import_embedded(spool.db, state, node,
                                                                        args.force))
    except AlreadyImported as exc:
        print(f"relay: fleet import: node {node} imported its state on {when_local(exc.args[0])}; "
              "again, its volumes and feedback would count twice (--force to do it anyway)",
              file=sys.stderr)
        return 1
    except StateError as exc:
        print(f"relay: fleet import: {exc}", file=sys.stderr)
        return 1
    print(f"imported from node {node}: {done.domains} domain(s), {done.suppressions} "
          f"suppression(s), {done.pauses} pause(s), {done.events} feedback event(s) still in "
          f"the rates' window, {done.dmarc_reports} DMARC report(s), warm-up days and volumes")
    return 0

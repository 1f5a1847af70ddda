"""`relay dmarc ingest FILE|-` and `relay dmarc report DOMAIN [--days N] [--json]`.

`ingest` reads DMARC aggregate reports (a mail carrying them, or a bare .xml, .xml.gz or
.zip file; `-` for standard input, as a mailbox pipe gives it) and stores them in the
governance state, as the feedback listener does: exit 0 when read (duplicates included),
1 when refused, with the reason. `report` shows who sent as the domain over the last N days
(default 14), source by source, grouped into relay's routes, known providers and unknown
sources, with what to fix for each failing one.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import sys
from pathlib import Path

from relay.cli_state import _with_state
from relay.clock import DAY, SystemClock
from relay.config import Config
from relay.dns import DnsResolver
from relay.state import StateError
from relay.watch import dmarc_view
from relay.watch.dmarc_intake import DmarcIntake
from relay.watch.dmarc_reports import ReportError



def cmd_dmarc(args, config: Config) -> int:
    if args.action == "ingest":
        return _ingest(args, config)
    return _report(args, config)


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def _ingest(args, config: Config) -> int:
    try:
        data = _read(args.target)
    except OSError as exc:
        print(f"relay: cannot read {args.target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        ingested = _with_state(config, lambda state, _: DmarcIntake(state, lambda: config).ingest(data))
    except ReportError as exc:
        print(f"relay: {args.target}: {exc}", file=sys.stderr)
        return 1
    except StateError as exc:
        print(f"relay: the state cannot store reports now: {exc}", file=sys.stderr)
        return 1
    for r in ingested.reports:
        print(f"{r.domain}: report {r.report_id} from {r.org_name or '?'} ({_day(r.begin)} to "
              f"{_day(r.end)}): {r.messages} message(s), {r.aligned} aligned, {r.failing} failing")
    print(f"{len(ingested.reports)} report(s), {ingested.new} new")
    return 0


def _report(args, config: Config) -> int:
    domain = args.target.strip().lower().rstrip(".")
    clock = SystemClock()
    now = clock.now()
    since = now - args.days * DAY
    reports = _with_state(config, lambda state, _: dmarc_view.stored_reports(state, domain, since))
    resolver = DnsResolver(config.dns.nameservers, config.dns.timeout, clock)
    ips = sorted({row.source_ip for r in reports for row in r.rows})
    names = asyncio.run(dmarc_view.reverse_names(resolver, ips))
    sources = dmarc_view.sources(config, reports, names)
    ready = dmarc_view.quarantine_ready(sources, reports, now) if domain in config.domains else None
    if args.json:
        print(json.dumps({"domain": domain, "days": args.days, "reports": len(reports),
                          "sources": [s.as_dict() for s in sources],
                          "quarantine_ready": ready.ready if ready else None,
                          "quarantine": ready.why if ready else None}, indent=2))
        return 0
    print(render(domain, args.days, reports, sources, ready))
    return 0


def render(domain: str, days: int, reports, sources, ready) -> str:
    if not reports:
        return (f"{domain}: no DMARC aggregate reports in the last {days} days. Publish "
                f"rua=mailto:<an address of relay's feedback listener> in _dmarc.{domain}, or "
                f"pipe reports to `relay dmarc ingest -`.")
    messages, aligned = sum(s.messages for s in sources), sum(s.aligned for s in sources)
    reporters = sorted({r.org_name or "?" for r in reports})
    lines = [f"{domain}: {len(reports)} report(s) from {', '.join(reporters)}, last {days} days: "
             f"{messages} message(s), {aligned} aligned ({_share(aligned, messages)}), "
             f"{messages - aligned} failing", ""]
    titles = {"route": "relay's routes", "provider": "known providers", "unknown": "unknown sources"}
    for group, title in titles.items():
        members = [s for s in sources if s.group == group]
        if not members:
            continue
        lines.append(f"{title}:")
        lines.append(f"  {'MESSAGES':>8} {'ALIGNED':>8}  {'DKIM':<6} {'SPF':<6} {'DISPOSITION':<16} SOURCE")
        for s in members:
            where = f"{s.ip} ({s.name or 'no PTR'})" + (f" {s.label}" if s.label else "")
            disposition = ", ".join(f"{k} {v}" for k, v in sorted(s.dispositions.items()))
            lines.append(f"  {s.messages:>8} {s.aligned:>8}  {_share(s.dkim_aligned, s.messages):<6} "
                         f"{_share(s.spf_aligned, s.messages):<6} {disposition:<16} {where}")
            advice = dmarc_view.advice(s)
            if advice:
                lines.append(f"    -> {advice}")
        lines.append("")
    if ready is not None:
        lines.append(("p=quarantine: ready, " if ready.ready else "p=quarantine: not yet, ")
                     + ready.why)
    return "\n".join(lines).rstrip() + "\n"


def _share(n: int, total: int) -> str:
    """A percentage that never rounds a failure away: 99.6%, not 100%."""
    if not total:
        return "-"
    share = 100 * n / total
    return f"{share:.0f}%" if n in (0, total) or 1 <= share <= 99 else f"{share:.1f}%"


def _day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")

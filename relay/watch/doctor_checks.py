"""`relay doctor`'s reputation lines: the domain and its route's egress IPs against the
configured blocklists (asked now, through the injected resolver), and what the stored DMARC
aggregate reports say, with when the domain can move from p=none to p=quarantine.
The report object and its statuses are `doctor.py`'s; this adds checks to it.
"""
from __future__ import annotations

import asyncio

from relay.checks import dmarc
from relay.config import Config
from relay.dns import DnsTemporaryError, Resolver
from relay.doctor_report import Report, Status
from relay.watch import dmarc_view
from relay.watch.aggregate import AggregateReport
from relay.watch.blocklists import Kind, look_up, zone
from relay.watch.blocklists import Status as Listing



async def blocklists(report: Report, config: Config, domain: str, resolver: Resolver) -> None:
    route_name = config.domains[domain].route
    route = config.routes.get(route_name)
    ips = list(route.spf.egress_ips) if route and route.spf else []
    questions = [(zone(z), ip, Kind.IP) for z in config.blocklists.ip_zones for ip in ips]
    questions += [(zone(z), domain, Kind.DOMAIN) for z in config.blocklists.domain_zones]
    if not questions:
        report.add("Blocklists", "zones", Status.WARN, "no blocklists.ip_zones or domain_zones "
                   "configured (or no egress_ips on the route): nothing to look up")
        return
    verdicts = await asyncio.gather(*(look_up(resolver, *q) for q in questions))
    for v in verdicts:
        if v.status is Listing.LISTED:
            shared = (f" (route {route_name}'s egress IP: if the provider shares it, tell the "
                      f"provider)" if v.kind is Kind.IP else "")
            report.add("Blocklists", v.zone.name, Status.WRONG, v.describe() + shared)
    refused = {v.zone.name: v for v in verdicts if v.status is Listing.REFUSED}
    for name, v in refused.items():
        report.add("Blocklists", name, Status.WARN, v.describe())
    unanswered = sorted({v.zone.name for v in verdicts if v.status is Listing.UNANSWERED})
    if unanswered:
        report.add("Blocklists", "DNS", Status.WARN, f"no answer from {', '.join(unanswered)}: "
                   "try again later")
    if not any(v.status is not Listing.CLEAR for v in verdicts):
        zones = len({q[0].name for q in questions})
        what = f"{domain}" + (f" and route {route_name}'s {len(ips)} egress IP(s)" if ips else "")
        report.add("Blocklists", "zones", Status.OK, f"{what}: listed in none of {zones} zone(s)")


async def dmarc_reports(report: Report, config: Config, domain: str, resolver: Resolver,
                        reports: list[AggregateReport], now: float) -> None:
    """`reports`: the domain's, as `dmarc_view.stored_reports` reads them."""
    if not reports:
        report.add("DMARC", "aggregate", Status.WARN, "no aggregate reports stored for the last "
                   f"{dmarc_view.READY_DAYS} days: point rua= at relay's feedback listener, or "
                   "pipe them to `relay dmarc ingest`")
        return
    names = await dmarc_view.reverse_names(resolver, sorted({row.source_ip for r in reports
                                                             for row in r.rows}))
    sources = dmarc_view.sources(config, reports, names)
    messages, aligned = sum(s.messages for s in sources), sum(s.aligned for s in sources)
    bad = [s for s in sources if s.group != "unknown" and s.failing > s.forwarded]
    unknown = [s for s in sources if s.group == "unknown" and s.failing]
    found = (f"{len(reports)} report(s): {aligned} of {messages} message(s) aligned; "
             f"{len(bad)} legitimate source(s) failing, {len(unknown)} unknown failing source(s)"
             f" (relay dmarc report {domain})")
    report.add("DMARC", "aggregate", Status.WARN if bad else Status.OK, found)
    ready = dmarc_view.quarantine_ready(sources, reports, now)
    policy = await _policy(resolver, domain)
    if policy is None or policy.applied_to(domain) != "none":
        return
    if ready.ready:
        rua = f"; rua={','.join(policy.rua)}" if policy.rua else ""
        report.add("DMARC", "quarantine", Status.OK, f"{ready.why}: you can move to p=quarantine "
                   "(t=y first: receivers report what quarantine would do without applying it)")
        report.publish(policy.name, f"v=DMARC1; p=quarantine; t=y{rua}",
                       "DMARC: quarantine in test mode, once the reports have shown it safe")
    else:
        report.add("DMARC", "quarantine", Status.OK, f"stay at p=none for now: {ready.why}")


async def _policy(resolver: Resolver, domain: str) -> dmarc.DmarcPolicy | None:
    try:
        return await dmarc.find_policy(resolver, domain)
    except (dmarc.DmarcRecordError, DnsTemporaryError):       # the DMARC lines said so
        return None

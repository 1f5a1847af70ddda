"""What a domain's DMARC aggregate reports say (`relay dmarc report`, `relay doctor`): who
sends as the domain, grouped the way an operator acts on it, with what to fix.

Sources are source IPs, summed over the reports of the period, each named by its reverse
DNS (PTR) and put in one of three groups:
- `route`: one of relay's routes (its `spf.egress_ips`): relay signs this mail, so it
  should pass aligned DKIM;
- `provider`: a known mail service (`senders.yaml`, by PTR suffix): usually the owner's
  own mailbox provider or marketing tool, which needs the domain authenticated there;
- `unknown`: anything else: a forgotten application, or someone spoofing the domain.

`quarantine_ready` is the move the guides advise: from p=none to p=quarantine once every
legitimate source (route and provider) has passed aligned for at least `READY_DAYS` of
reports (RFC 9989's `t=y` first, to see what quarantine would do).
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
from dataclasses import dataclass, field
from importlib import resources

import yaml

from relay.checks.dmarc import organizational_domain
from relay.clock import DAY
from relay.config import Config
from relay.dns import DnsTemporaryError, Resolver
from relay.state import State
from relay.watch.aggregate import AggregateReport, Row

READY_DAYS = 14


@dataclass
class Source:
    ip: str
    name: str = ""                         # PTR
    group: str = "unknown"                 # route | provider | unknown
    label: str = ""                        # the route's or provider's name
    messages: int = 0
    aligned: int = 0
    dkim_aligned: int = 0
    spf_aligned: int = 0
    forwarded: int = 0                     # failing, with a forwarding or list override
    dispositions: dict[str, int] = field(default_factory=dict)
    dkim_domains: dict[str, str] = field(default_factory=dict)    # d= -> its best result
    spf_domains: dict[str, str] = field(default_factory=dict)     # MAIL FROM domain -> result

    @property
    def failing(self) -> int:
        return self.messages - self.aligned

    def add(self, row: Row) -> None:
        self.messages += row.count
        self.aligned += row.count if row.aligned else 0
        self.dkim_aligned += row.count if row.dkim == "pass" else 0
        self.spf_aligned += row.count if row.spf == "pass" else 0
        if not row.aligned and {"forwarded", "mailing_list"} & set(row.reasons):
            self.forwarded += row.count
        self.dispositions[row.disposition] = self.dispositions.get(row.disposition, 0) + row.count
        for results, into in ((row.dkim_results, self.dkim_domains), (row.spf_results, self.spf_domains)):
            for r in results:
                if into.get(r.domain) != "pass":
                    into[r.domain] = r.result

    def as_dict(self) -> dict:
        return {"ip": self.ip, "name": self.name, "group": self.group, "label": self.label,
                "messages": self.messages, "aligned": self.aligned, "failing": self.failing,
                "dkim_aligned": self.dkim_aligned, "spf_aligned": self.spf_aligned,
                "forwarded": self.forwarded, "dispositions": self.dispositions,
                "dkim": self.dkim_domains, "spf": self.spf_domains,
                "advice": advice(self)}


@functools.lru_cache(maxsize=1)
def _senders() -> dict[str, dict]:
    text = resources.files("relay.watch").joinpath("senders.yaml").read_text()
    return yaml.safe_load(text)["senders"]


def provider_of(name: str) -> str | None:
    name = name.lower().rstrip(".")
    for provider, entry in _senders().items():
        if any(name == s or name.endswith("." + s) for s in entry["ptr"]):
            return provider
    return None


def sources(config: Config, reports: list[AggregateReport], names: dict[str, str]) -> list[Source]:
    """Every source IP of `reports`, grouped and summed, most messages first."""
    routes = {ip: route for route, r in config.routes.items() if r.spf for ip in r.spf.egress_ips}
    by_ip: dict[str, Source] = {}
    for report in reports:
        for row in report.rows:
            source = by_ip.get(row.source_ip)
            if source is None:
                source = by_ip[row.source_ip] = Source(row.source_ip, names.get(row.source_ip, ""))
                if row.source_ip in routes:
                    source.group, source.label = "route", routes[row.source_ip]
                elif (provider := provider_of(source.name)) is not None:
                    source.group, source.label = "provider", provider
            source.add(row)
    order = {"route": 0, "provider": 1, "unknown": 2}
    return sorted(by_ip.values(), key=lambda s: (order[s.group], -s.messages, s.ip))


async def reverse_names(resolver: Resolver, ips: list[str], limit: int = 200) -> dict[str, str]:
    """PTR names of the first `limit` IPs ("" where there is none or DNS fails)."""
    async def one(ip: str) -> tuple[str, str]:
        try:
            answer = await resolver.query(ipaddress.ip_address(ip).reverse_pointer, "PTR")
        except (DnsTemporaryError, ValueError):
            return ip, ""
        return ip, answer.records[0] if answer.records else ""
    return dict(await asyncio.gather(*(one(ip) for ip in ips[:limit])))


def reports_of(domain: str, reports: list[AggregateReport]) -> list[AggregateReport]:
    """`domain`'s reports, and the rows about it in its organizational domain's."""
    mine = []
    for r in reports:
        if r.domain == domain:
            mine.append(r)
        else:
            rows = tuple(row for row in r.rows if row.header_from in (domain, ""))
            if rows:
                mine.append(dataclasses.replace(r, rows=rows))
    return mine


async def stored_reports(state: State, domain: str, since: float) -> list[AggregateReport]:
    """What the state holds about `domain` from reports ending at or after `since`: its own
    reports, and its rows of its organizational domain's (whose policy it inherits)."""
    names = dict.fromkeys([domain, organizational_domain(domain)])
    return reports_of(domain, [r for name in names for r in await state.dmarc_reports(name, since)])


def advice(s: Source) -> str:
    """What to do about one source; "" when nothing is wrong."""
    if s.failing == 0:
        return ""
    if s.forwarded == s.failing:
        return ("forwarded or mailing-list mail: SPF cannot survive forwarding; DKIM does "
                "unless the forwarder changes the message; nothing to fix on your side")
    if s.group == "route":
        return (f"relay signs this mail (route {s.label}), yet DKIM did not align: the "
                f"provider changes the message (turn its link and open tracking off in the "
                f"route's headers) or the DKIM record is wrong (relay doctor)")
    if s.group == "provider":
        setup = _senders()[s.label]["setup"]
        what = "passes SPF for its own domain but" if s.spf_domains and "pass" in s.spf_domains.values() else "has"
        return (f"{s.label} sends as your domain and {what} no aligned DKIM: {setup}; "
                f"or send that mail through relay")
    return ("unknown sender: if it is yours (an application, a server, a service), send its "
            "mail through relay; if not, it is spoofing, which p=quarantine stops")


@dataclass(frozen=True)
class Readiness:
    ready: bool
    why: str


def quarantine_ready(all_sources: list[Source], reports: list[AggregateReport], now: float,
                     days: int = READY_DAYS) -> Readiness:
    """Whether the reports of the last `days` days show every legitimate source aligned."""
    if not reports:
        return Readiness(False, "no DMARC aggregate reports stored yet")
    covered = (now - min(r.begin for r in reports)) / DAY
    if covered < days - 1:        # reports cover whole days, ending before today
        return Readiness(False, f"reports cover {covered:.0f} day(s); wait for {days}")
    failing = [s for s in all_sources if s.group != "unknown" and s.failing > s.forwarded]
    if failing:
        names = ", ".join(f"{s.label} {s.ip} ({s.failing} failing)" for s in failing[:3])
        return Readiness(False, f"legitimate sources still fail: {names}")
    if not any(s.group != "unknown" for s in all_sources):
        return Readiness(False, "no report shows mail from relay's routes or a known provider")
    return Readiness(True, f"every legitimate source aligned over the last {days} days of reports")

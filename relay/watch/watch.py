"""The blocklist watch: every `blocklists.interval`, in the listener process, each watched
name is looked up in each zone of its kind, and what changed is said.

Watched: the routes' egress IPs (`routes.*.spf.egress_ips`, kind ip) in `ip_zones`; the
configured sender domains, and the organizational domains of the links in bulk mail this
process accepted in the last day (`saw_links`, from the lint's report; at most
`MAX_LINKED`, the most recent), kind domain, in `domain_zones`. Behind Brevo or Mailjet the
egress IPs are shared: their listing is the provider's to fix (tell it), the domains are
the owner's.

What a round says, against the round before:
- a new listing: a `blocklist_listed` event (the name, the zone's answer and meaning, its
  TXT reason, the removal page) and a warning; a listing gone: `blocklist_cleared`;
- a zone answering with error codes: one `blocklist_refused` event and warning until it
  answers again; never a listing;
- no answer (a DNS timeout): the name keeps its last verdict in that zone.
The gauges (`relay_blocklist_listed{zone,kind}`, `relay_blocklist_refused{zone}`, the last
round's time) are read from `listed`, `refused` and `checked` at scrape time; names never
become labels.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Callable, Iterable

from relay.checks.dmarc import organizational_domain
from relay.clock import DAY, Clock
from relay.config import Config
from relay.dns import Resolver
from relay.events import Event, emit
from relay.watch.blocklists import Kind, Status, Verdict, look_up, zone

log = logging.getLogger("relay.blocklists")

MAX_LINKED = 500           # linked domains watched at once
CONCURRENCY = 8            # lookups in flight


def targets(config: Config, linked: Iterable[str] = ()) -> list[tuple[Kind, str]]:
    """What a round looks up: (kind, name), each once."""
    ips = {ip for route in config.routes.values() if route.spf for ip in route.spf.egress_ips}
    domains = dict.fromkeys([*sorted(config.domains), *linked])
    return [(Kind.IP, ip) for ip in sorted(ips)] + [(Kind.DOMAIN, d) for d in domains]


class BlocklistWatch:
    def __init__(self, config: Callable[[], Config], resolver: Resolver, clock: Clock) -> None:
        self.config = config                # the running configuration (it changes on reload)
        self.resolver = resolver
        self.clock = clock
        self.linked: OrderedDict[str, float] = OrderedDict()    # domain -> last seen
        self.verdicts: dict[tuple[str, str], Verdict] = {}      # (zone, name) -> last verdict
        self.refused: dict[str, Verdict] = {}                   # zone -> its error answer
        self.checked = 0.0                                      # when the last round ended

    def saw_links(self, hosts: Iterable[str]) -> None:
        """Bulk mail links to these hosts: watch their organizational domains for a day."""
        now = self.clock.now()
        for host in hosts:
            domain = organizational_domain(host.lower().rstrip("."))
            self.linked[domain] = now
            self.linked.move_to_end(domain)
        while len(self.linked) > MAX_LINKED:
            self.linked.popitem(last=False)

    def _linked_now(self) -> list[str]:
        since = self.clock.now() - DAY
        for domain in [d for d, seen in self.linked.items() if seen < since]:
            del self.linked[domain]
        return list(self.linked)

    @property
    def listed(self) -> dict[tuple[str, str], int]:
        """(zone, kind) -> how many watched names it lists now."""
        counts: dict[tuple[str, str], int] = {}
        for verdict in self.verdicts.values():
            if verdict.status is Status.LISTED:
                key = (verdict.zone.name, verdict.kind.value)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def zones(self) -> list[tuple[str, Kind]]:
        config = self.config().blocklists
        return [(z, Kind.IP) for z in config.ip_zones] + [(z, Kind.DOMAIN) for z in config.domain_zones]

    async def check(self) -> list[Verdict]:
        """One round: every watched name in every zone of its kind; returns the verdicts."""
        config = self.config()
        watched = targets(config, self._linked_now())
        questions = [(zone(z), name, kind) for z, zone_kind in self.zones()
                     for kind, name in watched if kind is zone_kind]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def ask(z, name, kind) -> Verdict:
            async with gate:
                return await look_up(self.resolver, z, name, kind)
        verdicts = await asyncio.gather(*(ask(*q) for q in questions))
        self._absorb(verdicts, {(z.name, name) for z, name, _ in questions})
        self.checked = self.clock.now()
        return list(verdicts)

    def _absorb(self, verdicts: list[Verdict], asked: set[tuple[str, str]]) -> None:
        for key in [k for k in self.verdicts if k not in asked]:      # no longer watched
            del self.verdicts[key]
        unanswered, refused = 0, {}
        for verdict in verdicts:
            key = (verdict.zone.name, verdict.target)
            if verdict.status is Status.UNANSWERED:
                unanswered += 1
                continue
            if verdict.status is Status.REFUSED:
                refused.setdefault(verdict.zone.name, verdict)
                continue                                   # the last real answer stands
            before = self.verdicts.get(key)
            self.verdicts[key] = verdict
            was_listed = before is not None and before.status is Status.LISTED
            if verdict.status is Status.LISTED and (not was_listed or before.answers != verdict.answers):
                _listed(verdict)
            elif verdict.status is Status.CLEAR and was_listed:
                log.info("%s is no longer listed in %s", verdict.target, verdict.zone.name)
                emit(Event.BLOCKLIST_CLEARED, zone=verdict.zone.name, kind=verdict.kind.value,
                     name=verdict.target)
        for name, verdict in refused.items():
            if name not in self.refused:
                log.warning("blocklist %s", verdict.describe())
                emit(Event.BLOCKLIST_REFUSED, zone=name, answer=",".join(verdict.answers),
                     why="; ".join(verdict.meanings))
        self.refused = refused
        if unanswered:
            log.info("blocklists: %d lookup(s) unanswered (DNS timeout or SERVFAIL); their last "
                     "verdicts stand", unanswered)

    async def run(self) -> None:
        """Forever: a round, then `blocklists.interval`; a failed round is logged, not fatal."""
        while True:
            if self.zones():
                try:
                    await self.check()
                except Exception:                           # pragma: no cover - a bug: say it
                    log.exception("blocklist round failed")
            await asyncio.sleep(self.config().blocklists.interval)


def _listed(verdict: Verdict) -> None:
    log.warning("blocklist: %s", verdict.describe())
    emit(Event.BLOCKLIST_LISTED, zone=verdict.zone.name, kind=verdict.kind.value,
         name=verdict.target, answer=",".join(verdict.answers),
         meaning="; ".join(verdict.meanings), reason=verdict.reason or None,
         removal=verdict.zone.removal or None)

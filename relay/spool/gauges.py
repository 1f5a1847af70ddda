"""The gauges computed when Prometheus scrapes (declared in `metrics.SPOOL_GAUGES`): the
queue by state and its oldest message and the spool's free space, from the spool; per
domain complaint and bounce rates, warm-up day and pauses, and suppressions, from the
governance state (read by `refresh` before each scrape: the state is async), with the
messages of the last week's DMARC aggregate reports; the blocklist watch's last round, from
the watch (`watch/watch.py`). They hold across restarts because the spool and the state do;
the blocklist gauges start again with the first round after a start.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

from prometheus_client.core import GaugeMetricFamily

from relay.clock import DAY, Clock
from relay.config import Config
from relay.metrics import QUEUE_STATES, SPOOL_GAUGES
from relay.spool import space
from relay.spool.db import connect
from relay.state import DomainStatus, State, StateError
from relay.state.suppressions import SuppressionReason
from relay.watch.watch import BlocklistWatch

DMARC_WINDOW = 7 * DAY             # relay_dmarc_messages counts the reports of the last week


class SpoolCollector:
    """Gauges computed from the spool and the state when Prometheus scrapes."""

    def __init__(self, config: Callable[[], Config], clock: Clock, state: State,
                 watch: BlocklistWatch) -> None:
        self.config = config          # the running configuration (it changes on reload)
        self.clock = clock
        self.state = state
        self.watch = watch
        self._dmarc: dict[str, tuple[int, int]] = {}
        self._domains: list[DomainStatus] = []
        self._suppressions: dict[str, int] = {}
        self._up = 1.0

    async def refresh(self) -> None:
        """Read the state's figures for the next `collect`; a state that does not answer
        keeps the last ones, and says so (`relay_state_backend_up` 0)."""
        try:
            await self.state.check()
            self._domains = [await self.state.domain_status(d)
                             for d in sorted(self.config().domains)]
            self._suppressions = await self.state.suppression_counts()
            self._dmarc = await self.state.dmarc_totals(self.clock.now() - DMARC_WINDOW)
            self._up = 1.0
        except StateError:
            self._up = 0.0

    def collect(self):
        config = self.config()
        now = self.clock.now()
        families = {key: GaugeMetricFamily(name, text, labels=labels)
                    for key, (name, text, labels) in SPOOL_GAUGES.items()}
        with connect(config.spool.path / "relay.sqlite3") as conn:
            self._queue(conn, now, families)
            families["free"].add_metric([], space.free_bytes(conn, config.spool.path))
        families["min_free"].add_metric([], config.spool_min_free)
        families["state_up"].add_metric([], self._up)
        for status in self._domains:
            rates = status.rates
            families["complaint"].add_metric([status.domain], rates.complaint_rate)
            families["bounce"].add_metric([status.domain], rates.bounce_rate)
            families["warmup"].add_metric([status.domain], min(r.warmup_day for r in status.ramps))
            for scope in ("bulk", "all"):
                families["paused"].add_metric([status.domain, scope],
                                              1.0 if status.state == f"paused ({scope})" else 0.0)
        for reason in SuppressionReason:
            families["suppressions"].add_metric([reason.value], self._suppressions.get(reason.value, 0))
        for domain in sorted(set(config.domains) | set(self._dmarc)):
            aligned, failing = self._dmarc.get(domain, (0, 0))
            families["dmarc"].add_metric([domain, "aligned"], aligned)
            families["dmarc"].add_metric([domain, "failing"], failing)
        self._blocklists(config, families)
        yield from families.values()

    def _blocklists(self, config: Config, families: dict) -> None:
        listed = self.watch.listed
        zones = [(z, "ip") for z in config.blocklists.ip_zones] + \
            [(z, "domain") for z in config.blocklists.domain_zones]
        for zone, kind in zones:
            families["blocklist_listed"].add_metric([zone, kind], listed.get((zone, kind), 0))
        for zone in dict.fromkeys(z for z, _ in zones):
            families["blocklist_refused"].add_metric([zone], 1.0 if zone in self.watch.refused else 0.0)
        families["blocklist_checked"].add_metric([], self.watch.checked)

    @staticmethod
    def _queue(conn: sqlite3.Connection, now: float, families: dict) -> None:
        rows = {state: (count, oldest) for state, count, oldest in conn.execute(
            "SELECT CASE WHEN next_attempt <= ?1 THEN 'ready' WHEN hold_reason != '' THEN 'held'"
            " ELSE 'deferred' END, COUNT(*), MIN(created) FROM messages GROUP BY 1", (now,))}
        for name in QUEUE_STATES:
            count, oldest = rows.get(name, (0, None))
            families["queue"].add_metric([name], count)
            families["oldest"].add_metric([name], max(0.0, now - oldest) if oldest is not None else 0.0)

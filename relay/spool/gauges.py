"""The gauges computed from the spool database when Prometheus scrapes (declared in
`metrics.SPOOL_GAUGES`): per domain complaint and bounce rates, warm-up day and pauses; the
queue by state and its oldest message; suppressions; the spool's free space. They hold
across restarts because the spool does.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

from prometheus_client.core import GaugeMetricFamily

from relay.clock import Clock, day_of
from relay.config import Config
from relay.feedback.events import FeedbackKind
from relay.governor.warmup import warmup_day
from relay.metrics import QUEUE_STATES, SPOOL_GAUGES
from relay.spool import space
from relay.spool.store import connect
from relay.state import sqlite as state
from relay.state.suppressions import SuppressionReason


class SpoolCollector:
    """Gauges computed from the spool database when Prometheus scrapes."""

    def __init__(self, config: Callable[[], Config], clock: Clock) -> None:
        self.config = config          # the running configuration (it changes on reload)
        self.clock = clock

    def collect(self):
        config = self.config()
        now = self.clock.now()
        families = {key: GaugeMetricFamily(name, text, labels=labels)
                    for key, (name, text, labels) in SPOOL_GAUGES.items()}
        with connect(config.spool.path / "relay.sqlite3") as conn:
            self._domains(conn, config, now, families)
            self._queue(conn, now, families)
            counts = dict(conn.execute("SELECT reason, COUNT(*) FROM suppressions GROUP BY reason"))
            families["free"].add_metric([], space.free_bytes(conn, config.spool.path))
        families["min_free"].add_metric([], config.spool_min_free)
        for reason in SuppressionReason:
            families["suppressions"].add_metric([reason.value], counts.get(reason.value, 0))
        yield from families.values()

    @staticmethod
    def _domains(conn: sqlite3.Connection, config: Config, now: float, families: dict) -> None:
        since = now - config.reputation.window
        pauses = state.paused(conn)
        first_send, _ = state.load(conn, day_of(now))
        today = day_of(now)
        for domain in sorted(config.domains):
            delivered = state.delivered_since(conn, domain, since)
            for name, kind in (("complaint", FeedbackKind.COMPLAINED), ("bounce", FeedbackKind.BOUNCED_HARD)):
                count = state.count_feedback(conn, domain, (kind.value,), since)
                families[name].add_metric([domain], count / delivered if delivered else 0.0)
            first = first_send.get(domain)
            families["warmup"].add_metric(
                [domain], warmup_day(None if first is None else day_of(first), today))
            for scope in ("bulk", "all"):
                held = domain in pauses and pauses[domain][0] == scope
                families["paused"].add_metric([domain, scope], 1.0 if held else 0.0)

    @staticmethod
    def _queue(conn: sqlite3.Connection, now: float, families: dict) -> None:
        rows = {state: (count, oldest) for state, count, oldest in conn.execute(
            "SELECT CASE WHEN next_attempt <= ?1 THEN 'ready' WHEN hold_reason != '' THEN 'held'"
            " ELSE 'deferred' END, COUNT(*), MIN(created) FROM messages GROUP BY 1", (now,))}
        for name in QUEUE_STATES:
            count, oldest = rows.get(name, (0, None))
            families["queue"].add_metric([name], count)
            families["oldest"].add_metric([name], max(0.0, now - oldest) if oldest is not None else 0.0)

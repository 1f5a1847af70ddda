"""Prometheus metrics, declared here and nowhere else; served on the private `metrics:`
listener at /metrics (plus /healthz).

Names are `relay_<subsystem>_<name>`, labels bounded (a domain is configured, never an
address). Values that live in the spool (rates, pauses, queue) are read from it at scrape
time by `SpoolCollector`, so both relay processes' work shows without shared memory.
"""
from __future__ import annotations

import sqlite3

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from relay.clock import Clock
from relay.config import Config
from relay.spool.store import connect
from relay.state import sqlite as state


class SpoolCollector:
    """Gauges computed from the spool database when Prometheus scrapes."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def collect(self):
        complaint = GaugeMetricFamily("relay_domain_complaint_rate",
                                      "Complaints per recipient delivered over reputation.window",
                                      labels=["domain"])
        bounce = GaugeMetricFamily("relay_domain_bounce_rate",
                                   "Hard bounces per recipient delivered over reputation.window",
                                   labels=["domain"])
        paused = GaugeMetricFamily("relay_domain_paused", "1 while the domain's mail is held",
                                   labels=["domain", "scope"])
        queued = GaugeMetricFamily("relay_queue_messages", "Messages in the spool", labels=["stream"])
        path = self.config.spool.path / "relay.sqlite3"
        with connect(path) as conn:
            since = self.clock.now() - self.config.reputation.window
            pauses = state.paused(conn)
            for domain in sorted(self.config.domains):
                delivered = state.delivered_since(conn, domain, since)
                for family, kind in ((complaint, "complained"), (bounce, "bounced_hard")):
                    count = state.count_feedback(conn, domain, (kind,), since)
                    family.add_metric([domain], count / delivered if delivered else 0.0)
                for scope in ("bulk", "all"):
                    held = domain in pauses and pauses[domain][0] == scope
                    paused.add_metric([domain, scope], 1.0 if held else 0.0)
            counts = dict(conn.execute("SELECT stream, COUNT(*) FROM messages GROUP BY stream"))
        queued.add_metric(["transactional"], counts.get(0, 0))
        queued.add_metric(["bulk"], counts.get(1, 0))
        yield from (complaint, bounce, paused, queued)


def make_app(config: Config, clock: Clock) -> web.Application:
    registry = CollectorRegistry()
    registry.register(SpoolCollector(config, clock))

    async def metrics(request: web.Request) -> web.Response:
        try:
            body = generate_latest(registry)
        except sqlite3.Error as exc:
            return web.Response(status=503, text=f"spool unreadable: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app

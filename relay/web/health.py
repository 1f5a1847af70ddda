"""The private `metrics:` listener: /metrics for Prometheus, /healthz and /readyz for probes.

- /healthz: the process answers (liveness; a restart is the cure when it does not).
- /readyz: relay can take mail now: every SMTP listener is serving, the spool takes a write
  (through the writer thread, fsynced, as a queued message would be), its filesystem has
  `spool.min_free` left (else new mail gets 452 4.3.1), and the state backend
  answers a read. 503 with the failing checks otherwise (readiness; traffic goes elsewhere),
  except for a fleet's shared state: without Redis the node still takes mail into its spool
  (and sends nothing ungranted), so it answers 200 "degraded", naming the check.
Both answer JSON; each check has `timeout` seconds.
"""
from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

Check = Callable[[], Awaitable[None]]      # returns when fine, raises saying what is wrong


def make_app(registry: CollectorRegistry, checks: dict[str, Check],
             timeout: float = 2.0, before_scrape: Check | None = None,
             degraded: frozenset[str] = frozenset()) -> web.Application:
    """`before_scrape`: awaited before each scrape (the gauges that read async state).
    `degraded`: checks whose failure leaves the node ready, degraded (200, "degraded")."""
    async def metrics(request: web.Request) -> web.Response:
        try:    # the spool gauges read SQLite: off the event loop
            if before_scrape is not None:
                await before_scrape()
            body = await asyncio.to_thread(generate_latest, registry)
        except Exception as exc:
            return web.Response(status=503, text=f"metrics unavailable: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        results = await asyncio.gather(*(_run(check, timeout) for check in checks.values()))
        report = dict(zip(checks, results))
        failing = {name for name, result in report.items() if result != "ok"}
        if failing - degraded:
            return _json(503, {"status": "not ready", "checks": report})
        return _json(200, {"status": "degraded" if failing else "ready", "checks": report})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _run(check: Check, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return "ok"


def _json(status: int, body: dict) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")

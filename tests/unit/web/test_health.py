"""relay.web.health: the private metrics listener's /healthz, /readyz and /metrics, served on
a real socket (127.0.0.1, port 0) and asked with an HTTP client.

/healthz answers while the process does; /readyz runs every check, each within `timeout`,
and names the ones that failed; /metrics is the registry's text exposition, or 503 when a
collector cannot be read.
"""
from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from relay.web.health import make_app
from relay.web.unsubscribe import start_http, stop_http


def run(coro):
    return asyncio.run(coro)


async def ok() -> None:
    return None


async def get(app, path: str) -> tuple[int, str, str]:
    """Serve `app` on a free port, GET `path`, stop: (status, content type header, body)."""
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                return response.status, response.headers["Content-Type"], await response.text()
    finally:
        await stop_http(runner)


async def get_json(app, path: str) -> tuple[int, dict]:
    runner, port = await start_http(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                assert response.content_type == "application/json"
                return response.status, await response.json()
    finally:
        await stop_http(runner)


def test_healthz_answers_200_ok():
    """Liveness: 200 {"status": "ok"}, whatever the readiness checks would say."""
    async def broken() -> None:
        raise RuntimeError("spool gone")
    assert run(get_json(make_app(CollectorRegistry(), {"spool": broken}), "/healthz")) == (
        200, {"status": "ok"})


def test_readyz_is_200_when_every_check_passes():
    app = make_app(CollectorRegistry(), {"listeners": ok, "spool": ok, "state": ok})
    assert run(get_json(app, "/readyz")) == (200, {
        "status": "ready", "checks": {"listeners": "ok", "spool": "ok", "state": "ok"}})


def test_readyz_with_no_checks_is_ready():
    assert run(get_json(make_app(CollectorRegistry(), {}), "/readyz")) == (
        200, {"status": "ready", "checks": {}})


def test_readyz_is_503_naming_the_check_that_failed_and_why():
    """A check that raises reports its message; the others still say ok."""
    async def spool() -> None:
        raise RuntimeError("spool not writable: disk I/O error")
    app = make_app(CollectorRegistry(), {"listeners": ok, "spool": spool})
    assert run(get_json(app, "/readyz")) == (503, {
        "status": "not ready",
        "checks": {"listeners": "ok", "spool": "spool not writable: disk I/O error"}})


def test_an_exception_without_a_message_is_named_by_its_class():
    async def state() -> None:
        raise ConnectionResetError()
    status, body = run(get_json(make_app(CollectorRegistry(), {"state": state}), "/readyz"))
    assert (status, body["checks"]) == (503, {"state": "ConnectionResetError"})


def test_a_check_that_does_not_answer_in_time_fails_and_is_cancelled():
    """A check still running after `timeout` is reported as "no answer within <timeout> s"
    and cancelled, so a hung backend leaves no task behind."""
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario():
        app = make_app(CollectorRegistry(), {"spool": ok, "state": hangs}, timeout=0.05)
        answer = await get_json(app, "/readyz")
        await asyncio.wait_for(cancelled.wait(), 5)
        return answer
    assert run(scenario()) == (503, {
        "status": "not ready", "checks": {"spool": "ok", "state": "no answer within 0.05 s"}})


def test_checks_run_concurrently():
    """Each check has the whole timeout, not what the previous ones left: `second` only
    finishes once `first` is running, so run one after the other they would time out."""
    started = asyncio.Event()

    async def first() -> None:
        started.set()

    async def waits_for_first() -> None:
        await started.wait()

    app = make_app(CollectorRegistry(), {"second": waits_for_first, "first": first}, timeout=5)
    assert run(get_json(app, "/readyz")) == (200, {
        "status": "ready", "checks": {"second": "ok", "first": "ok"}})


def test_metrics_serves_the_registry_in_the_prometheus_text_format():
    registry = CollectorRegistry()
    deliveries = Counter("relay_test_deliveries", "Deliveries, by route", ["route"], registry=registry)
    deliveries.labels("brevo").inc(3)
    status, content_type, body = run(get(make_app(registry, {}), "/metrics"))
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert content_type.startswith("text/plain; version=")
    [family] = text_string_to_metric_families(body)
    assert (family.name, family.type) == ("relay_test_deliveries", "counter")
    assert [(s.name, s.labels, s.value) for s in family.samples
            if not s.name.endswith("_created")] == [("relay_test_deliveries_total", {"route": "brevo"}, 3.0)]


def test_metrics_is_503_when_a_collector_fails():
    """A collector that raises (the spool database cannot be read) makes the scrape fail
    visibly, rather than serve a partial exposition."""
    class Broken:
        def collect(self):
            raise RuntimeError("database is locked")
    registry = CollectorRegistry()
    Counter("relay_test_things", "Things", registry=registry)
    registry.register(Broken())
    status, _, body = run(get(make_app(registry, {}), "/metrics"))
    assert status == 503
    assert body == "metrics unavailable: database is locked\n"


def test_other_paths_are_404():
    status, _, _ = run(get(make_app(CollectorRegistry(), {}), "/"))
    assert status == 404

"""The listener process: configuration in, running relay out.

`Relay` builds the listener process's objects from the config (with `compose.py`, through
which the delivery process builds its own), starts the listeners and the delivery process,
and stops them in order on SIGTERM/SIGINT: stop accepting, let open SMTP transactions
finish, let delivery attempts in progress finish, close the spool. Delivery runs in its own process (`outbound/process.py`); the clock is
injected, which is how tests fake it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Callable
import signal
from concurrent.futures import ThreadPoolExecutor

from relay.checks.admission import Admission
from relay.checks.auth import AuthThrottle, Users
from relay.clock import Clock, SystemClock
from relay.checks.dmarc import DmarcMonitor
from aiohttp import web

from relay.checks.spf import SpfEvaluator
from relay import events
from relay.events import Event, emit
from relay.state.suppressions import SuppressionReason
from relay import metrics
from relay.feedback.intake import FeedbackIntake
from relay.web import health, webhooks
from relay.web.unsubscribe import make_app, start_http, stop_http
from relay.checks.spf_gate import SpfGate
from relay.config import Config
from relay.dns import DnsResolver, Resolver
from relay.errors import ConfigError
from relay.inbound.acceptance import Acceptance
from relay.inbound.server import Listeners
from relay.lint.process import LintProcess
from relay.outbound.process import DeliveryProcess
from relay.compose import open_stores, preflight, prime_metrics
from relay.console import Console, make_app as console_app
from relay.spool.gauges import SpoolCollector
from relay.spool.space import SpaceGuard
from relay.state.redis import HEARTBEAT
from relay.watch.dmarc_intake import DmarcIntake
from relay.watch.watch import BlocklistWatch

log = logging.getLogger("relay")


class Relay:
    def __init__(self, config: Config, clock: Clock | None = None,
                 resolver: Resolver | None = None,
                 reread: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reread = reread          # how SIGHUP gets the configuration again
        self.clock = clock or SystemClock()
        self.resolver = resolver or DnsResolver(config.dns.nameservers, config.dns.timeout, self.clock)
        self.signer, context, tokens = preflight(config)
        self.spool, self.state = open_stores(config, self.clock)
        self.signing_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dkim")
        self.dmarc = DmarcMonitor(self.resolver, self.clock)
        self.delivery = DeliveryProcess(config)
        self.intake = FeedbackIntake(self.state)
        self.lint = LintProcess(tuple(config.content.languages))
        self.blocklists = BlocklistWatch(lambda: self.config, self.resolver, self.clock)
        server = config.server
        self.acceptance = Acceptance(
            config, Users(config.users), AuthThrottle(server.auth_failures, self.clock),
            Admission(server.max_connections, server.max_connections_per_ip), self.signer,
            self.spool, self.clock, self.signing_pool,
            SpfGate(config, SpfEvaluator(self.resolver), self.clock), self.dmarc, self.state,
            SpaceGuard(config.spool_min_free, self.spool.free_bytes, self.clock), tokens,
            self.intake,
            on_queued=lambda message: self.delivery.wake(), lint=self.lint.check,
            on_links=self.blocklists.saw_links,
            dmarc_reports=DmarcIntake(self.state, lambda: self.config))
        self.listeners = Listeners(config, self.acceptance, context)
        self.http_runner = None
        self.metrics_runner = None
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._heartbeat: asyncio.Future | None = None
        self._watching: asyncio.Future | None = None

    async def start(self) -> None:
        prime_metrics(self.config)
        self.spool.start()
        if self.config.content.mode != "off":
            await self.lint.start()
        await self.listeners.start()
        if self.config.http is not None:
            tokens = self.acceptance.tokens
            app = make_app(tokens, self._unsubscribed) if tokens else web.Application()
            webhooks.add_routes(app, self.config.feedback.webhooks, self.intake.record)
            self.http_runner, self.http_port = await start_http(
                app, self.config.http.address, self.config.http.port)
            log.info("HTTP listening on %s:%d (/unsubscribe, /webhooks/%s)", self.config.http.address,
                     self.http_port, ",".join(self.config.feedback.webhooks) or "-")
        if self.config.metrics is not None:
            registry = metrics.CollectorRegistry()
            registry.register(metrics.Merged(self.delivery.samples))
            gauges = SpoolCollector(lambda: self.config, self.clock, self.state, self.blocklists)
            registry.register(gauges)
            checks = {"listeners": self.listeners.check, "spool": self.spool.check_writable,
                      "spool_space": self.acceptance.space.ready, "state": self.state.check}
            private = health.make_app(registry, checks, before_scrape=gauges.refresh,
                                      degraded=frozenset({"state"} if self.config.state.backend
                                                         == "redis" else ()))
            if self.config.console.enabled:       # on reload, console.users apply at once
                private.add_subapp("/console/", console_app(Console(
                    lambda: self.config, self.state, self.spool, self.resolver, self.clock,
                    self.acceptance.throttle, self.blocklists)))
            self.metrics_runner, self.metrics_port = await start_http(
                private, self.config.metrics.address, self.config.metrics.port)
            log.info("metrics on %s:%d (/metrics, /healthz, /readyz%s)", self.config.metrics.address,
                     self.metrics_port, ", /console/" if self.config.console.enabled else "")
        await self.delivery.start()
        self._watching = asyncio.ensure_future(self.blocklists.run())
        if self.config.state.backend == "redis":
            self._heartbeat = asyncio.ensure_future(self._beat())
        log.info("relay started: %d listener(s), %d route(s), %d domain(s), spool %s",
                 len(self.listeners.servers), len(self.config.routes), len(self.config.domains),
                 self.config.spool.path)

    async def _beat(self) -> None:
        """A fleet node says it is alive, for `relay fleet status`."""
        node = self.config.state.node or socket.gethostname()
        while True:
            await self.state.heartbeat(node)
            await asyncio.sleep(HEARTBEAT)

    def port(self, listener: str) -> int:
        return self.listeners.port(listener)

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        log.info("draining: no new connections; open transactions may finish")
        for runner in (self.http_runner, self.metrics_runner):
            if runner is not None:
                await stop_http(runner)
        await self.listeners.drain(drain_timeout)
        self.dmarc.close()
        await self.lint.stop()
        await self.delivery.stop(drain_timeout)
        tasks = [task for task in (self._heartbeat, self._watching) if task is not None]
        for task in tasks:
            task.cancel()
        # until they have ended: a blocklist round's DNS lookups left pending would be
        # garbage once the loop is gone ("coroutine ignored ... no running event loop")
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.state.close()
        self.spool.close()
        self.signing_pool.shutdown(wait=True)
        log.info("relay stopped")

    async def _unsubscribed(self, recipient: str, domain: str) -> None:
        """RFC 8058 one-click: that recipient gets no more mail of that sender domain."""
        await self.state.suppress(recipient, domain, SuppressionReason.UNSUBSCRIBED)
        metrics.FEEDBACK_EVENTS.labels("one_click", "unsubscribed").inc()
        emit(Event.SUPPRESSED, domain=domain, reason=SuppressionReason.UNSUBSCRIBED.value,
             source="one_click")

    async def reload(self) -> bool:
        """Re-read the configuration and apply it to the next decisions, without dropping a
        session or a queued message. An invalid file changes nothing: its errors are logged."""
        try:
            config = self.reread()
            signer, context, _ = preflight(config)
        except ConfigError as exc:
            for line in exc.errors:
                log.error("reload refused, the running configuration stays: %s", line)
            return False
        moved = {"min_free": None}                # a threshold: it applies at once
        if (config.server.listeners != self.config.server.listeners
                or config.spool.model_copy(update=moved) != self.config.spool.model_copy(update=moved)):
            log.warning("reload: server.listeners and spool changes take effect at the next "
                        "restart (spool.min_free applies now)")
        server = config.server
        self.acceptance.space.min_free = config.spool_min_free
        self.acceptance.config = config
        self.acceptance.users = Users(config.users)
        self.acceptance.throttle.policy = server.auth_failures
        self.acceptance.admission.max_total = server.max_connections
        self.acceptance.admission.max_per_ip = server.max_connections_per_ip
        self.acceptance.signer = signer
        if config.content.mode == "off":
            await self.lint.stop()
        elif self.config.content.mode == "off" or \
                config.content.languages != self.config.content.languages:
            await self.lint.restart(tuple(config.content.languages))
        if config.feedback != self.config.feedback or config.http != self.config.http:
            log.warning("reload: feedback.unsubscribe and http changes take effect at the next "
                        "restart (links already sent must keep working with the same secret)")
        self.acceptance.spf_gate.reconfigure(config)
        self.listeners.reconfigure(config, context)
        self.state.reconfigure(config)
        if config.logging != self.config.logging:
            events.configure(config.logging.format, config.logging.level)
        self.config = config
        prime_metrics(config)
        await self.delivery.reload(config)
        log.info("configuration reloaded: %d user(s), %d domain(s), %d route(s)",
                 len(config.users), len(config.domains), len(config.routes))
        return True

    async def serve_forever(self, pid_file: Path | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if self.reread is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.start()
        if pid_file is not None:
            pid_file.write_text(f"{os.getpid()}\n")
        try:
            await self._stop.wait()
            await self.stop()
        finally:
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)


def pid_file(config: Config) -> Path:
    """Where `relay serve` notes its process id, for `relay reload`."""
    return config.spool.path / "relay.pid"


def run(config: Config, reread: Callable[[], Config]) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run

    async def main() -> None:
        await Relay(config, reread=reread).serve_forever(pid_file(config))
    runner(main())

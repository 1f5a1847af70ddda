"""The composition root: configuration in, running relay out.

`Relay` builds every object from the config (the only place that does), starts the
listeners and the delivery workers, and stops them in order on SIGTERM/SIGINT: stop
accepting, let open SMTP transactions finish, let delivery attempts in progress finish,
close the spool. Delivery runs in its own process (`outbound/process.py`); the clock is
injected, which is how tests fake it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor

from relay import tls
from relay.checks.admission import Admission
from relay.checks.auth import AuthThrottle, Users
from relay.clock import Clock, SystemClock
from relay.checks.dmarc import DmarcMonitor
from relay.checks.spf import SpfEvaluator
from relay.checks.spf_gate import SpfGate
from relay.config import Config
from relay.dns import DnsResolver, Resolver
from relay.errors import ConfigError
from relay.inbound.acceptance import Acceptance
from relay.inbound.server import Listeners
from relay.outbound.process import DeliveryProcess
from relay.signing.dkim import KeyError_, Signer, load_key
from relay.spool.store import Spool

log = logging.getLogger("relay")


def load_signer(config: Config) -> Signer:
    keys, errors = {}, []
    for name, domain in config.domains.items():
        for i, key in enumerate(domain.dkim):
            try:
                keys.setdefault(name, []).append(load_key(name, key.selector, key.private_key, key.algorithm))
            except KeyError_ as exc:
                errors.append(f"domains.{name}.dkim[{i}].private_key: {exc}")
    if errors:
        raise ConfigError(errors)
    for name in config.domains:
        if name not in keys:
            log.warning("domain %s has no DKIM key: its mail leaves unsigned", name)
    return Signer(keys)


def preflight(config: Config) -> tuple[Signer, "ssl.SSLContext | None"]:
    """Everything that can fail at start besides binding ports: keys and certificates."""
    server = config.server
    context = (tls.server_context(server.tls, config.spool.path, server.hostname)
               if server.tls else None)
    unreadable = [f"routes.{name}.ca_file: cannot read {route.ca_file}"
                  for name, route in config.routes.items()
                  if route.ca_file is not None and not os.access(route.ca_file, os.R_OK)]
    if unreadable:
        raise ConfigError(unreadable)
    for i, user in enumerate(config.users):
        for entry in user.senders:
            domain = entry.rpartition("@")[2].lower()
            if domain not in config.domains:
                log.warning("users[%d].senders: %s has no domains: entry; its mail is refused", i, entry)
    return load_signer(config), context


class Relay:
    def __init__(self, config: Config, clock: Clock | None = None,
                 resolver: Resolver | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.resolver = resolver or DnsResolver(config.dns.nameservers, config.dns.timeout, self.clock)
        self.signer, context = preflight(config)
        self.spool = Spool(config.spool.path)
        self.signing_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dkim")
        self.dmarc = DmarcMonitor(self.resolver, self.clock)
        self.delivery = DeliveryProcess(config)
        server = config.server
        self.acceptance = Acceptance(
            config, Users(config.users), AuthThrottle(server.auth_failures, self.clock),
            Admission(server.max_connections, server.max_connections_per_ip), self.signer,
            self.spool, self.clock, self.signing_pool,
            SpfGate(config, SpfEvaluator(self.resolver), self.clock), self.dmarc,
            on_queued=lambda message: self.delivery.wake())
        self.listeners = Listeners(config, self.acceptance, context)
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self.spool.start()
        await self.listeners.start()
        await self.delivery.start()
        log.info("relay started: %d listener(s), %d route(s), %d domain(s), spool %s",
                 len(self.listeners.servers), len(self.config.routes), len(self.config.domains),
                 self.config.spool.path)

    def port(self, listener: str) -> int:
        return self.listeners.port(listener)

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        log.info("draining: no new connections; open transactions may finish")
        await self.listeners.drain(drain_timeout)
        self.dmarc.close()
        await self.delivery.stop(drain_timeout)
        self.spool.close()
        self.signing_pool.shutdown(wait=True)
        log.info("relay stopped")

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stop.wait()
        await self.stop()


def run(config: Config) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    runner(Relay(config).serve_forever())

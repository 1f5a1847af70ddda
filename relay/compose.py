"""How relay's objects are built from the configuration, for both of its processes and
the CLI: the DKIM keys (`load_signer`), what must hold before anything listens
(`preflight`), the spool and the governance state (`open_stores`: the one place that picks
the state's implementation, `state.backend`), the delivery process's objects (`build_delivery`) and the
metrics' label sets (`prime_metrics`). The listener process's `Relay` (`app.py`) and the
delivery process (`outbound/process.py`) both build through here; neither imports the
other's composition.
"""
from __future__ import annotations

import logging
import os
import ssl

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from relay import metrics, tls
from relay.checks.spf import SpfResult
from relay.clock import Clock
from relay.dns import DnsResolver, Resolver
from relay.config import Config
from relay.errors import ConfigError
from relay.feedback.events import FeedbackKind
from relay.feedback.intake import FeedbackIntake
from relay.governor.governor import HoldReason
from relay.governor.providers import ProviderMap, load_mapping
from relay.lint.rules import RULES
from relay.outbound import upstream
from relay.outbound.retry import Backoff
from relay.outbound.worker import Delivery
from relay.replies import Refusal
from relay.signing.dkim import ED25519_SHA256, RSA_SHA256, KeyError_, Signer, load_key
from relay.spool.store import Spool
from relay.state import State
from relay.state.redis import RedisState
from relay.state.sqlite import SqliteState
from relay.web.tokens import UnsubscribeTokens

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


def preflight(config: Config) -> tuple[Signer, "ssl.SSLContext | None", UnsubscribeTokens | None]:
    """Everything that can fail at start besides binding ports: keys, certificates, secrets."""
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
    try:
        load_mapping(config.limits.warmup.providers)
    except ConfigError as exc:
        raise ConfigError([f"limits.warmup.providers: {e}" for e in exc.errors]) from None
    for line in config.warnings():
        log.warning("%s", line)
    tokens = None
    if config.feedback.unsubscribe is not None:
        try:
            tokens = UnsubscribeTokens(config.feedback.unsubscribe.secret())
        except ValueError as exc:
            raise ConfigError([f"feedback.unsubscribe.secret_env: {exc}"]) from None
    return load_signer(config), context, tokens


def open_stores(config: Config, clock: Clock) -> tuple[Spool, State]:
    """The spool and the governance state (sharing the spool's database: the embedded
    state); the caller starts the spool, and closes both."""
    spool = Spool(config.spool.path)
    if config.state.backend == "redis":
        return spool, RedisState(redis_client(config), config, clock, spool.db)
    return spool, SqliteState(spool.db, config, clock)


def redis_client(config: Config) -> "Redis":
    """The fleet's Redis, with bounded timeouts (a call never hangs: REFERENCE "Redis for
    shared state" says not to cancel calls with wait_for) and one quick retry."""
    timeout = config.state.timeout
    return Redis.from_url(config.state.url(), socket_timeout=timeout,
                          socket_connect_timeout=timeout,
                          retry=Retry(ExponentialBackoff(cap=timeout / 4, base=0.01), 1))


async def build_delivery(config: Config, clock: Clock, resolver: Resolver | None = None
                         ) -> tuple[Spool, State, Delivery]:
    """The delivery pipeline on a started spool: routes, state, signer, backoff, intake,
    and the mailbox providers of the recipients (MX lookups through `resolver`)."""
    spool, state = open_stores(config, clock)
    spool.start()
    routes = {name: upstream.build(name, route, config.server.hostname)
              for name, route in config.routes.items()}
    resolver = resolver or DnsResolver(config.dns.nameservers, config.dns.timeout, clock)
    providers = ProviderMap(load_mapping(config.limits.warmup.providers), resolver, clock)
    delivery = Delivery(config, spool, state, routes, load_signer(config), clock,
                        Backoff(config.spool.retry), FeedbackIntake(state), providers)
    return spool, state, delivery


def prime_metrics(config: Config) -> None:
    """Create every bounded label set at zero, so rates and alerts see a series from the start
    (a counter that appears at its first increment hides that increment from `rate()`)."""
    for listener in config.server.listeners:
        if listener.role == "submission":
            for stream in ("transactional", "bulk"):
                metrics.MESSAGES_RECEIVED.labels(listener.name, stream)
    for reason in Refusal:
        metrics.MESSAGES_REJECTED.labels(reason.value)
    algorithms = {key.algorithm or RSA_SHA256 for d in config.domains.values() for key in d.dkim}
    for algorithm in algorithms & {RSA_SHA256, ED25519_SHA256}:
        for result in ("ok", "error"):
            metrics.DKIM_SIGNATURES.labels(algorithm, result)
    for result in SpfResult:
        metrics.SPF_CHECKS.labels(result.value)
    if config.content.mode != "off":
        for rule in RULES:
            metrics.CONTENT_FINDINGS.labels(rule)
    for route in config.routes:
        metrics.DELIVERY_DURATION.labels(route)
        for result in metrics.DELIVERY_RESULTS:
            metrics.DELIVERIES.labels(route, result)
    for reason in HoldReason:
        metrics.GOVERNOR_DEFERRALS.labels(reason.value)
    for source in metrics.FEEDBACK_SOURCES:
        for kind in FeedbackKind:
            metrics.FEEDBACK_EVENTS.labels(source, kind.value)

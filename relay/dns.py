"""DNS for the relay: one injected async resolver (dnspython) with a bounded TTL cache.

Owns: talking to the configured nameservers (`dns.nameservers`, "host" or "host:port";
empty means the system resolver), per-query timeouts (`dns.timeout`), and caching answers,
negative ones included, for their TTL (at most `dns.max_ttl`, at most `dns.cache_size`
entries). Callers get a `DnsAnswer` (records + TTL; an empty answer is NXDOMAIN or NODATA,
a "void lookup" in RFC 7208 terms) or a `DnsTemporaryError` (timeout, SERVFAIL, no
nameserver answering). Nothing here blocks the event loop.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from relay.clock import Clock

log = logging.getLogger("relay.dns")


class DnsTemporaryError(Exception):
    """The question could not be answered now (timeout, SERVFAIL): try again later."""


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    records: tuple[str, ...]       # TXT: the strings of each record joined; MX: "pref host"
    ttl: int
    nxdomain: bool = False

    @property
    def void(self) -> bool:
        return not self.records


class Resolver(Protocol):
    async def query(self, name: str, rdtype: str) -> DnsAnswer: ...


def parse_nameserver(spec: str) -> tuple[str, int]:
    """"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353" -> (address, port)."""
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]:")
        return host.rstrip("]"), int(port or 53)
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 53


def _text(rdtype: str, rdata) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
    if rdtype in ("PTR", "CNAME"):
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.to_text()


class DnsResolver:
    """The production resolver: dnspython's async stub resolver plus our cache."""

    NEGATIVE_TTL = 300

    def __init__(self, nameservers: list[str], timeout: float, clock: Clock,
                 max_ttl: float = 3600, cache_size: int = 10_000) -> None:
        try:
            self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration:
            log.warning("no system resolver configuration (/etc/resolv.conf) and no "
                        "dns.nameservers: every DNS question will fail temporarily")
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = []
        if nameservers:
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(s))
                                          for s in nameservers]
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._clock = clock
        self._max_ttl = max_ttl
        self._cache: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()
        self._cache_size = cache_size

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rdtype)
        cached = self._cache.get(key)
        now = self._clock.now()
        if cached and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1]
        answer = await self._ask(key[0], rdtype)
        self._cache[key] = (now + min(answer.ttl, self._max_ttl), answer)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return answer

    async def _ask(self, name: str, rdtype: str) -> DnsAnswer:
        try:
            result = await self._resolver.resolve(name, dns.rdatatype.from_text(rdtype),
                                                  search=False)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer((), self.NEGATIVE_TTL, nxdomain=True)
        except dns.resolver.NoAnswer:
            return DnsAnswer((), self.NEGATIVE_TTL)
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout,
                asyncio.TimeoutError, OSError) as exc:
            raise DnsTemporaryError(f"{rdtype} {name}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{rdtype} {name}: {exc}") from None
        records = tuple(_text(rdtype, r) for r in result)
        return DnsAnswer(records, int(result.rrset.ttl) if result.rrset else self.NEGATIVE_TTL)

"""Mailbox providers: which provider (Google, Microsoft, ...) a recipient's mailbox is at.

Owns the provider mapping (`providers.yaml` next to this module, overridable by a file of the
same shape) and the grouping of recipients by it, for per-provider warm-up: by the domain
first, then, for a custom domain, by its MX hosts (Google Workspace, Microsoft 365, ...), as
KumoMTA's shaping groups destinations by MX suffix. `other` is everything no provider claims,
including every domain whose MX lookup fails: a lookup never blocks nor fails a delivery.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from relay.clock import Clock
from relay.dns import Resolver
from relay.errors import ConfigError

log = logging.getLogger("relay.governor")

OTHER = "other"
SHIPPED = "providers.yaml"
MIN_TTL = 60                      # seconds an MX answer is kept at least, however short its TTL
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_HOST = r"(?:[a-z0-9_-]+\.)*[a-z0-9-]+"
_DOMAIN_PATTERN = re.compile(rf"^{_HOST}(?:\.\*)?$")
_MX_SUFFIX = re.compile(rf"^{_HOST}$")


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    domains: tuple[str, ...]      # "gmail.com", or "outlook.*": "outlook." and a top-level domain
    mx: tuple[str, ...]           # MX host suffixes, matched on a label boundary

    def has_domain(self, domain: str) -> bool:
        for pattern in self.domains:
            if not pattern.endswith(".*"):
                if domain == pattern:
                    return True
            elif domain.startswith(stem := pattern[:-1]) and _is_suffix(domain[len(stem):]):
                return True
        return False

    def has_mx(self, host: str) -> bool:
        return any(host == suffix or host.endswith("." + suffix) for suffix in self.mx)


# second-level labels under which a country's registry sells names (outlook.co.uk,
# yahoo.com.br, live.com.au): `name.*` covers a top-level domain or one of these
_SECOND_LEVEL = {"co", "com", "net", "org", "ne", "or", "ac"}


def _is_suffix(rest: str) -> bool:
    """`rest` (after `name.`) is a top-level domain, or a country's second level under it."""
    labels = rest.split(".")
    if len(labels) == 1:
        return bool(labels[0])
    return len(labels) == 2 and labels[0] in _SECOND_LEVEL and len(labels[1]) == 2


def load_mapping(path: Path | None = None) -> dict[str, Provider]:
    """The shipped providers, with those of the file at `path` replacing or added to them."""
    shipped = resources.files(__package__).joinpath(SHIPPED).read_text(encoding="utf-8")
    mapping = _parse(shipped, SHIPPED)
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the providers file: {exc.strerror}"]) from None
        mapping.update(_parse(text, str(path)))
    return mapping


def _parse(text: str, source: str) -> dict[str, Provider]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
        raise ConfigError([f"{source}: expected a mapping with a `providers` mapping"])
    errors = [f"{source}: {key}: unknown key" for key in data if key != "providers"]
    mapping = {}
    for name, entry in data["providers"].items():
        where = f"{source}: providers.{name}"
        if name == OTHER:
            errors.append(f"{where}: `other` is every domain no provider claims; "
                          "it cannot be defined")
        elif not isinstance(name, str) or not _NAME.match(name):
            errors.append(f"{where}: a provider name is lower-case letters, digits, _ and -")
        elif not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with `domains` and/or `mx`")
        else:
            errors += [f"{where}.{key}: unknown key" for key in entry if key not in ("domains", "mx")]
            domains = _names(entry.get("domains"), _DOMAIN_PATTERN, f"{where}.domains",
                             "expected a list of domain names (`name` or `name.*`)", errors)
            mx = _names(entry.get("mx"), _MX_SUFFIX, f"{where}.mx",
                        "expected a list of host suffixes", errors)
            if not domains and not mx:
                errors.append(f"{where}: needs `domains` or `mx`, or it matches nothing")
            mapping[name] = Provider(name, domains, mx)
    if errors:
        raise ConfigError(errors)
    return mapping


def _names(value: object, pattern: re.Pattern[str], where: str, expected: str,
           errors: list[str]) -> tuple[str, ...]:
    """A list of names, normalized; appends to `errors` and returns () when malformed."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{where}: {expected}")
        return ()
    names = tuple(_normal(v) for v in value)
    bad = [v for v in names if not pattern.match(v)]
    if bad:
        errors.append(f"{where}: {expected}, not {', '.join(map(repr, bad))}")
    return names


class ProviderMap:
    """Recipient domain -> provider name, with MX answers cached per domain for their TTL."""

    def __init__(self, providers: dict[str, Provider], resolver: Resolver, clock: Clock,
                 failure_ttl: float = 300.0, max_entries: int = 50_000) -> None:
        self._providers = providers
        self._resolver = resolver
        self._clock = clock
        self._failure_ttl = failure_ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()   # -> (expires, name)
        self._inflight: dict[str, asyncio.Task[str]] = {}

    def names(self) -> list[str]:
        return [*self._providers, OTHER]

    def by_domain(self, domain: str) -> str | None:
        """The provider whose domain list names `domain`, or None: no DNS asked."""
        domain = _normal(domain)
        return next((p.name for p in self._providers.values() if p.has_domain(domain)), None)

    async def provider_of(self, domain: str) -> str:
        """The provider of a recipient domain; never raises (a failed lookup is OTHER)."""
        domain = _normal(domain)
        if not domain:
            return OTHER
        if (known := self.by_domain(domain)) is not None:
            return known
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > self._clock.now():
            return cached[1]
        task = self._inflight.get(domain)
        if task is None:
            task = self._inflight[domain] = asyncio.ensure_future(self._lookup(domain))
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        # shielded: a cancelled caller must not cancel the query others are waiting for
        return await asyncio.shield(task)

    async def providers(self, addresses: list[str]) -> list[str]:
        """The provider of each address, each distinct domain looked up once, concurrently."""
        domains = [a.rpartition("@")[2].lower() if "@" in a else "" for a in addresses]
        distinct = list(dict.fromkeys(domains))
        found = dict(zip(distinct, await asyncio.gather(*map(self.provider_of, distinct))))
        return [found[d] for d in domains]

    async def _lookup(self, domain: str) -> str:
        try:
            answer = await self._resolver.query(domain, "MX")
            name, ttl = self._by_mx(answer.records), max(answer.ttl, MIN_TTL)
        except Exception as exc:     # a DnsTemporaryError or worse: group it, deliver anyway
            log.info("MX lookup for %s failed (%s): its recipients count as %r for %gs",
                     domain, exc, OTHER, self._failure_ttl)
            name, ttl = OTHER, self._failure_ttl
        self._cache[domain] = (self._clock.now() + ttl, name)
        self._cache.move_to_end(domain)
        if len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return name

    def _by_mx(self, records: tuple[str, ...]) -> str:
        """The provider of the most preferred MX host that has one (RFC 5321 §5.1 order);
        a null MX (RFC 7505, host ".") or no MX at all is OTHER."""
        for record in sorted(records, key=lambda r: int(r.split()[0])):    # "pref host"
            host = _normal(record.split()[-1])
            for provider in self._providers.values():
                if provider.has_mx(host):
                    return provider.name
        return OTHER

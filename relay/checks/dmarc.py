"""DMARC (RFC 7489): a domain's published policy, and whether relay's DKIM signatures align.

Owns:
- policy discovery (§6.6.3): the TXT record at `_dmarc.<From domain>`, else at
  `_dmarc.<organizational domain>`, the organizational domain coming from the Public Suffix
  List (§3.2, `publicsuffixlist`, shipped with the package: no network);
- the record's tags (§6.3): `v=DMARC1` first, `p`, `sp`, `adkim`, `aspf`, `rua`; others
  (`pct`, `ri`, `rf`, `fo`, `ruf`) are read and ignored, as RFC 9989 drops them;
- identifier alignment (§3.1): relaxed = same organizational domain, strict = identical;
- `DmarcMonitor`, which the acceptance pipeline tells about each From domain and the DKIM
  domains relay signs it with, and which warns on the `relay.dmarc` logger, at most once an
  hour per domain and in the background, when the domain has no DMARC policy or when no
  signature relay adds would align. It never delays, rejects or raises into the session.

Behind Brevo or Mailjet the Return-Path is the provider's, so SPF never aligns with From:
DMARC passes only through an aligned DKIM signature, which is why only DKIM is evaluated here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import OrderedDict

from publicsuffixlist import PublicSuffixList

from relay.clock import Clock
from relay.dns import DnsTemporaryError, Resolver

log = logging.getLogger("relay.dmarc")

POLICIES = ("none", "quarantine", "reject")
RELAXED, STRICT = "r", "s"


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()             # ~50 ms to load: once per process


def _clean(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def organizational_domain(domain: str) -> str:
    """The registered domain under its public suffix (RFC 7489 §3.2): mail.example.co.uk ->
    example.co.uk. A public suffix itself, or a single label, is its own."""
    domain = _clean(domain)
    return _psl().privatesuffix(domain) or domain


def aligned(from_domain: str, signing_domain: str, mode: str = RELAXED) -> bool:
    """Identifier alignment (§3.1): strict needs identical domains, relaxed the same
    organizational domain."""
    a, b = _clean(from_domain), _clean(signing_domain)
    if mode == STRICT:
        return a == b
    return a == b or organizational_domain(a) == organizational_domain(b)


def aligned_domains(from_domain: str, signing_domains: list[str], mode: str = RELAXED) -> list[str]:
    """The DKIM `d=` domains among `signing_domains` that align with From."""
    return [d for d in signing_domains if aligned(from_domain, d, mode)]


@dataclasses.dataclass(frozen=True)
class DmarcPolicy:
    """A parsed `v=DMARC1` record, and where it was found."""
    p: str                            # none | quarantine | reject
    sp: str | None = None             # for subdomains; p when absent
    adkim: str = RELAXED
    aspf: str = RELAXED
    rua: tuple[str, ...] = ()
    record: str = ""
    name: str = ""                    # the _dmarc name it was read at
    problem: str = ""                 # a fault a receiver tolerates (§6.6.3: bad p with rua)

    def applied_to(self, domain: str) -> str:
        """The disposition for mail From `domain`: `sp` when the policy is inherited from
        the organizational domain (§6.6.3 step 3), else `p`."""
        inherited = self.name != "_dmarc." + _clean(domain)
        return (self.sp or self.p) if inherited else self.p


class DmarcRecordError(ValueError):
    """A `v=DMARC1` record a receiver would discard (the sentence says why)."""


def parse_record(text: str) -> DmarcPolicy:
    """Parse a DMARC record (§6.3, §6.4). Raises DmarcRecordError for records receivers
    discard. An invalid or missing `p` with a valid `rua` counts as p=none (§6.6.3 step 6)."""
    if not _is_dmarc(text):
        raise DmarcRecordError("the record must start with v=DMARC1")
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, value = part.partition("=")
        if not sep:
            raise DmarcRecordError(f"{part!r} is not a tag=value pair")
        tags.setdefault(name.strip().lower(), value.strip())
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    valid_rua = tuple(u for u in rua if u.lower().startswith(("mailto:", "https:", "http:")))
    p, problem = tags.get("p", "").lower(), ""
    if p not in POLICIES:
        if not valid_rua:
            raise DmarcRecordError("missing or invalid p= (none, quarantine or reject)")
        problem = f"invalid p={p!r} read as p=none because rua= is set" if p else "p= is missing"
        p = "none"
    sp = tags.get("sp", "").lower() or None
    if sp is not None and sp not in POLICIES:
        problem, sp = problem or f"invalid sp={sp!r} ignored", None
    return DmarcPolicy(p=p, sp=sp, adkim=_mode(tags.get("adkim")), aspf=_mode(tags.get("aspf")),
                       rua=valid_rua, record=text, problem=problem)


def _is_dmarc(record: str) -> bool:
    """Whether a TXT record is a DMARC record at all: its first tag is v=DMARC1 (§6.4;
    the version is case-sensitive)."""
    name, _, value = record.split(";", 1)[0].partition("=")
    return name.strip() == "v" and value.strip() == "DMARC1"


def _mode(value: str | None) -> str:
    return STRICT if (value or "").lower() == STRICT else RELAXED


async def find_policy(resolver: Resolver, domain: str) -> DmarcPolicy | None:
    """The DMARC policy governing mail From `domain` (§6.6.3), or None when there is none.

    Raises DnsTemporaryError when DNS cannot answer now, DmarcRecordError when the record
    found is one receivers discard (several `v=DMARC1` records, bad syntax)."""
    domain = _clean(domain)
    policy = await _policy_at(resolver, "_dmarc." + domain)
    organizational = organizational_domain(domain)
    if policy is None and organizational != domain:
        policy = await _policy_at(resolver, "_dmarc." + organizational)
    return policy


async def _policy_at(resolver: Resolver, name: str) -> DmarcPolicy | None:
    answer = await resolver.query(name, "TXT")
    records = [r for r in answer.records if _is_dmarc(r)]
    if not records:
        return None
    if len(records) > 1:
        raise DmarcRecordError(f"{name} has {len(records)} DMARC records (receivers ignore all)")
    try:
        policy = parse_record(records[0])
    except DmarcRecordError as exc:
        raise DmarcRecordError(f"{name}: {exc}") from None
    return dataclasses.replace(policy, name=name)


def suggested_record(domain: str) -> str:
    """The safe first policy (REFERENCE.md, DMARC): monitor only, with aggregate reports."""
    return f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{_clean(domain)}"


class DmarcMonitor:
    """Warns, in the background, about From domains whose mail will fail DMARC."""

    def __init__(self, resolver: Resolver, clock: Clock, interval: float = 3600,
                 retry: float = 300, max_domains: int = 10_000) -> None:
        self.resolver = resolver
        self.clock = clock
        self.interval = interval          # between two checks of one domain
        self.retry = retry                # after a DNS temporary error
        self.max_domains = max_domains
        self._due: OrderedDict[str, float] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def observe(self, from_domain: str, signing_domains: list[str]) -> None:
        """Note mail From `from_domain`, to be signed for `signing_domains`. Cheap: at most
        one background lookup per domain per `interval`; never raises."""
        try:
            loop = asyncio.get_running_loop()
            domain = _clean(from_domain)
            now = self.clock.now()
            if not domain or self._due.get(domain, 0) > now:
                return
            self._remember(domain, now + self.interval)
            task = loop.create_task(self._check(domain, list(signing_domains)),
                                    name=f"dmarc {domain}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:                 # noqa: BLE001 - observing must never hurt a session
            log.exception("DMARC monitor: cannot observe %r", from_domain)

    @property
    def pending(self) -> int:
        """Lookups under way."""
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait for the lookups under way (tests, and a graceful stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Cancel the lookups under way (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()

    def _remember(self, domain: str, due: float) -> None:
        self._due[domain] = due
        self._due.move_to_end(domain)
        while len(self._due) > self.max_domains:
            self._due.popitem(last=False)

    async def _check(self, domain: str, signing_domains: list[str]) -> None:
        try:
            policy = await find_policy(self.resolver, domain)
        except DnsTemporaryError as exc:
            log.info("DMARC policy of %s not checked: DNS temporary error (%s)", domain, exc)
            self._remember(domain, self.clock.now() + self.retry)
            return
        except DmarcRecordError as exc:
            log.warning("%s has no usable DMARC policy: %s; receivers apply none. Publish at "
                        "_dmarc.%s: %s", domain, exc, domain, suggested_record(domain))
            policy = None
        except Exception:                 # noqa: BLE001 - a background task reports, never raises
            log.exception("DMARC policy of %s not checked", domain)
            return
        else:
            if policy is None:
                log.warning("%s publishes no DMARC policy (Gmail and Yahoo require one of bulk "
                            "senders). Publish at _dmarc.%s: %s",
                            domain, domain, suggested_record(domain))
        self._warn_unaligned(domain, signing_domains, policy)

    def _warn_unaligned(self, domain: str, signing_domains: list[str],
                        policy: DmarcPolicy | None) -> None:
        mode = policy.adkim if policy else RELAXED
        if aligned_domains(domain, signing_domains, mode):
            return
        if not signing_domains:
            log.warning("mail From %s leaves without a DKIM signature: it fails DMARC (the "
                        "provider's Return-Path never aligns); configure domains.%s.dkim",
                        domain, domain)
            return
        log.warning("no DKIM key relay signs %s mail with aligns with From (%s alignment, "
                    "d=%s): it fails DMARC", domain, "strict" if mode == STRICT else "relaxed",
                    ",".join(signing_domains))

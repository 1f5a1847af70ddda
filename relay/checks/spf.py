"""SPF (RFC 7208): does a domain's published policy authorize an IP address?

Owns `check_host` (§4), evaluated on the injected async resolver: the `v=spf1` record
(exactly one, §4.5), mechanisms all, include, a, mx, ptr, ip4, ip6, exists (§5), the
redirect modifier (§6.1), macros (§7), the limit of 10 DNS-querying terms and of 2 void
lookups (§4.6.4). Every DNS failure is `temperror`; every policy error is `permerror`
with a sentence naming the problem. The result's TTL is the smallest TTL seen, so callers
can cache it.
"""
from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from relay.dns import DnsAnswer, DnsTemporaryError, Resolver

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_OR_PTR_NAMES = 10


class SpfResult(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIERS = {"+": SpfResult.PASS, "-": SpfResult.FAIL, "~": SpfResult.SOFTFAIL,
               "?": SpfResult.NEUTRAL}
_MECHANISM = re.compile(r"^(all|include|a|mx|ptr|ip4|ip6|exists)(.*)$", re.IGNORECASE)
_MODIFIER = re.compile(r"^([a-z][a-z0-9_.-]*)=(.*)$", re.IGNORECASE)
_DOMAIN_CIDR = re.compile(r"^(?::([^/]+))?(?:/(\d{1,2}))?(?://(\d{1,3}))?$")
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|(%)|(_)|(-))", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    result: SpfResult
    problem: str = ""           # why, for permerror and temperror
    lookups: int = 0            # DNS-querying terms evaluated
    ttl: int = 3600


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass
class _State:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    lookups: int = 0
    voids: int = 0
    ttl: int = 86400
    seen: set = field(default_factory=set)

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS lookups (at {term})")


class SpfEvaluator:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def check_host(self, ip: str, domain: str, sender: str) -> SpfOutcome:
        state = _State(ipaddress.ip_address(ip), sender)
        try:
            result = await self._check(state, domain.lower().rstrip("."))
            return SpfOutcome(result, "", state.lookups, state.ttl)
        except _PermError as exc:
            return SpfOutcome(SpfResult.PERMERROR, str(exc), state.lookups, state.ttl)
        except _TempError as exc:
            return SpfOutcome(SpfResult.TEMPERROR, str(exc), state.lookups, 0)

    async def record(self, domain: str) -> tuple[str | None, int]:
        """The domain's SPF record (None when it has none) and its TTL; raises on errors."""
        answer = await self._query(domain, "TXT")
        records = [r for r in answer.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        if len(records) > 1:
            raise _PermError(f"{domain} publishes {len(records)} SPF records (one is allowed)")
        return (records[0] if records else None), answer.ttl

    # --- evaluation -------------------------------------------------------------------
    async def _check(self, state: _State, domain: str) -> SpfResult:
        if domain in state.seen:
            raise _PermError(f"{domain} includes itself")
        state.seen.add(domain)
        try:
            record, ttl = await self.record(domain)
        finally:
            state.seen.discard(domain)
        state.ttl = min(state.ttl, ttl)
        if record is None:
            return SpfResult.NONE
        redirect = None
        terms = record.split()[1:]
        parsed = [_parse(term) for term in terms]
        for kind, qualifier, name, arg in parsed:
            if kind == "modifier":
                if name == "redirect":
                    if redirect is not None:
                        raise _PermError(f"{domain}: more than one redirect")
                    redirect = arg
                continue
            state.seen.add(domain)
            try:
                matched = await self._mechanism(state, domain, name, arg)
            finally:
                state.seen.discard(domain)
            if matched:
                return _QUALIFIERS[qualifier]
        if redirect is not None and not any(p[2] == "all" for p in parsed):
            state.count_lookup("redirect=" + redirect)
            target = self._expand(redirect, state, domain)
            result = await self._check(state, target)
            if result is SpfResult.NONE:
                raise _PermError(f"redirect={target}: {target} has no SPF record")
            return result
        return SpfResult.NEUTRAL

    async def _mechanism(self, state: _State, domain: str, name: str, arg: str) -> bool:
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return _in_network(state.ip, name, arg)
        state.count_lookup(f"{name}{arg}")
        if name == "include":
            target = self._expand(arg[1:], state, domain)
            result = await self._check(state, target)
            if result is SpfResult.NONE:
                raise _PermError(f"include:{target}: {target} has no SPF record")
            return result is SpfResult.PASS
        if name == "exists":
            answer = await self._lookup(state, self._expand(arg[1:], state, domain), "A")
            return bool(answer.records)
        target, cidr4, cidr6 = self._domain_cidr(state, domain, name, arg)
        if name == "a":
            return await self._address_matches(state, target, cidr4, cidr6)
        if name == "mx":
            answer = await self._lookup(state, target, "MX")
            hosts = [h for h in (r.split()[-1] for r in answer.records) if h not in ("@", ".", "")]
            if len(hosts) > MAX_MX_OR_PTR_NAMES:
                raise _PermError(f"mx:{target} has more than {MAX_MX_OR_PTR_NAMES} MX hosts")
            for host in hosts:
                if await self._address_matches(state, host, cidr4, cidr6, void_counts=False):
                    return True
            return False
        return await self._ptr_matches(state, target)

    async def _address_matches(self, state: _State, host: str, cidr4: int, cidr6: int,
                               void_counts: bool = True) -> bool:
        v4 = state.ip.version == 4
        answer = await self._lookup(state, host, "A" if v4 else "AAAA", void_counts)
        prefix = cidr4 if v4 else cidr6
        network = ipaddress.ip_network(f"{state.ip}/{prefix}", strict=False)
        return any(_address(r) in network for r in answer.records if _address(r))

    async def _ptr_matches(self, state: _State, target: str) -> bool:
        """§5.5: DNS errors here make the mechanism not match; they are not temperrors."""
        try:
            answer = await self._lookup(state, state.ip.reverse_pointer, "PTR", void_counts=False)
        except _TempError:
            return False
        for name in answer.records[:MAX_MX_OR_PTR_NAMES]:
            name = name.lower()
            if not (name == target or name.endswith("." + target)):
                continue
            try:
                if await self._address_matches(state, name, 32, 128, void_counts=False):
                    return True
            except _TempError:
                continue
        return False

    # --- helpers ----------------------------------------------------------------------
    def _domain_cidr(self, state: _State, domain: str, name: str, arg: str) -> tuple[str, int, int]:
        """The target and prefix lengths of an a/mx/ptr term (`_parse` validated it)."""
        spec, cidr4, cidr6 = _DOMAIN_CIDR.match(arg).groups()
        return (self._expand(spec, state, domain) if spec else domain), int(cidr4 or 32), int(cidr6 or 128)

    async def _query(self, name: str, rdtype: str) -> DnsAnswer:
        try:
            return await self.resolver.query(name, rdtype)
        except DnsTemporaryError as exc:
            raise _TempError(str(exc)) from None

    async def _lookup(self, state: _State, name: str, rdtype: str,
                      void_counts: bool = True) -> DnsAnswer:
        answer = await self._query(name, rdtype)
        state.ttl = min(state.ttl, answer.ttl)
        if answer.void and void_counts:
            state.voids += 1
            if state.voids > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} lookups returned nothing "
                                 f"(at {rdtype} {name})")
        return answer

    def _expand(self, spec: str, state: _State, domain: str) -> str:
        """Macro expansion (RFC 7208 §7) of a domain-spec."""
        if "%" not in spec:
            return spec.lower().rstrip(".")
        local, _, sender_domain = state.sender.rpartition("@")
        values = {"s": state.sender, "l": local or "postmaster", "o": sender_domain, "d": domain,
                  "i": _dotted(state.ip), "p": "unknown", "h": domain,
                  "v": "in-addr" if state.ip.version == 4 else "ip6"}

        def one(match: re.Match) -> str:
            letter, digits, reverse, delimiters, percent, underscore, dash = match.groups()
            if percent:
                return "%"
            if underscore:
                return " "
            if dash:
                return "%20"
            value = values.get(letter.lower())
            if value is None:
                raise _PermError(f"macro %{{{letter}}} is not allowed here")
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                if int(digits) == 0:
                    raise _PermError("macro with 0 labels")
                parts = parts[-int(digits):]
            return ".".join(parts)

        _check_macros(spec)
        expanded = _MACRO.sub(one, spec).rstrip(".")
        while len(expanded) > 253 and "." in expanded:       # §7.3: drop labels from the left
            expanded = expanded.split(".", 1)[1]
        return expanded.lower()


def _check_macros(spec: str) -> None:
    """Every % must begin a macro of §7.1 (letters s l o d i p h v, and %% %_ %-)."""
    if "%" in _MACRO.sub("", spec):
        raise _PermError(f"bad macro in {spec!r}")
    for letter in re.findall(r"%\{([a-z])", spec, re.IGNORECASE):
        if letter.lower() not in "slodiphv":
            raise _PermError(f"macro %{{{letter}}} is not allowed here")


def _parse(term: str) -> tuple[str, str, str, str]:
    """-> (kind, qualifier, name, argument) or PermError: a syntax error anywhere in the
    record makes it a permerror, even after a matching term (§4.6)."""
    modifier = _MODIFIER.match(term)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if not value:
                raise _PermError(f"{name} needs a domain: {term!r}")
            _check_macros(value)
        return "modifier", "", name, value
    qualifier = term[0] if term[:1] in _QUALIFIERS else "+"
    body = term[1:] if term[:1] in _QUALIFIERS else term
    match = _MECHANISM.match(body)
    if not match:
        raise _PermError(f"unknown term {term!r}")
    name, arg = match.group(1).lower(), match.group(2)
    if name == "all" and arg:
        raise _PermError(f"unknown term {term!r}")
    if name in ("include", "exists", "ip4", "ip6") and not (arg.startswith(":") and len(arg) > 1):
        raise _PermError(f"{name} needs an argument: {term!r}")
    if name in ("ip4", "ip6"):
        _network(name, arg)                       # validate now: a bad network is a permerror
    elif name in ("include", "exists"):
        _check_macros(arg[1:])
    elif name in ("a", "mx", "ptr"):
        match = _DOMAIN_CIDR.match(arg)
        if not match or (arg.startswith(":") and not match.group(1)):
            raise _PermError(f"cannot parse {term!r}")
        spec, cidr4, cidr6 = match.groups()
        if name == "ptr" and (cidr4 or cidr6):
            raise _PermError(f"ptr takes no prefix length: {term!r}")
        if int(cidr4 or 32) > 32 or int(cidr6 or 128) > 128:
            raise _PermError(f"bad prefix length in {term!r}")
        if spec:
            _check_macros(spec)
    return "mechanism", qualifier, name, arg


def _network(name: str, arg: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(arg[1:], strict=False)
    except ValueError:
        raise _PermError(f"{name}{arg} is not a network") from None
    if (name == "ip4") != (network.version == 4):
        raise _PermError(f"{name}{arg} is not an IPv{name[-1]} network")
    return network


def _in_network(ip, name: str, arg: str) -> bool:
    network = _network(name, arg)
    return ip.version == network.version and ip in network


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _dotted(ip) -> str:
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))

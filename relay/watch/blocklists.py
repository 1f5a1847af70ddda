"""DNS blocklists (RFC 5782): how to ask a zone about an IP address or a domain, and what
its answer means.

- the question: an IPv4 address's octets reversed (`2.0.0.127.zen.spamhaus.org`), an IPv6
  address's 32 nibbles reversed (RFC 5782 §2.4), a domain as it is (`acme.fr.dbl.spamhaus.org`);
- the answer, an A record, read with the zone's meanings from `zones.yaml` (data, not code):
  a listing (with its meaning and the zone's TXT reason), an error answer (the zone refuses
  our queries: a public resolver, a rate limit; REFERENCE "DNS blocklists"), which is never a
  listing, or no record: not listed. An answer outside 127.0.0.0/8 is a resolver that
  rewrites NXDOMAIN: refused too, since nothing can be read from it.

A zone not in `zones.yaml` still works: any 127.0.0.0/8 answer but the default error codes
is a listing. Spamhaus DQS zones (`<key>.zen.dq.spamhaus.net`) take their public zone's
meanings. DNS is the injected resolver; a temporary failure is `Status.UNANSWERED`.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, field
from importlib import resources

import yaml

from relay.dns import DnsTemporaryError, Resolver


class Kind(enum.StrEnum):
    IP = "ip"                  # the routes' egress IPs
    DOMAIN = "domain"          # sender domains, and domains linked from bulk mail


class Status(enum.StrEnum):
    LISTED = "listed"
    CLEAR = "clear"
    REFUSED = "refused"        # an error answer: the zone would not tell
    UNANSWERED = "unanswered"  # DNS timeout or SERVFAIL: ask again next time


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    kind: Kind | None                    # None: a zone relay has no data for
    removal: str = ""
    answers: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bitmask: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    zone: Zone
    target: str                          # the IP address or domain asked about
    kind: Kind
    status: Status
    answers: tuple[str, ...] = ()        # the A records
    meanings: tuple[str, ...] = ()       # what they mean (listing), or why refused
    reason: str = ""                     # the zone's TXT record, for a listing

    def describe(self) -> str:
        """One line for a log or `relay doctor`."""
        if self.status is Status.LISTED:
            why = "; ".join(self.meanings) + (f" ({self.reason})" if self.reason else "")
            where = f"; removal: {self.zone.removal}" if self.zone.removal else ""
            return f"{self.target} is listed in {self.zone.name}: {why}{where}"
        if self.status is Status.REFUSED:
            return (f"{self.zone.name} refuses our queries ({', '.join(self.answers)}: "
                    f"{'; '.join(self.meanings)}): a listing there would go unseen")
        if self.status is Status.UNANSWERED:
            return f"{self.zone.name} did not answer about {self.target}"
        return f"{self.target} is not listed in {self.zone.name}"


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return yaml.safe_load(resources.files("relay.watch").joinpath("zones.yaml").read_text())


def _strings(mapping: dict | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (mapping or {}).items()}


@functools.lru_cache(maxsize=256)
def zone(name: str) -> Zone:
    """The zone's meanings: its own entry, its public zone's for a DQS name, else generic."""
    name = name.lower().rstrip(".")
    data = _data()
    for public, entry in data["zones"].items():
        dqs = entry.get("dqs")
        if name == public or (dqs and (name == dqs or name.endswith("." + dqs))):
            errors = _strings(entry.get("errors"))
            if not entry.get("bitmask"):
                errors = {**_strings(data["default_errors"]), **errors}
            return Zone(name, Kind(entry["kind"]), entry.get("removal", ""),
                        _strings(entry.get("answers")), errors, bool(entry.get("bitmask")))
    return Zone(name, None, errors=_strings(data["default_errors"]))


def question(target: str, zone_name: str) -> str:
    """The name to ask: the reversed address (IPv4 octets, IPv6 nibbles) or the domain."""
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return f"{target.lower().rstrip('.')}.{zone_name}"
    if address.version == 4:
        return ".".join(reversed(str(address).split("."))) + "." + zone_name
    return ".".join(reversed(address.exploded.replace(":", ""))) + "." + zone_name


def read(zone: Zone, answers: tuple[str, ...]) -> tuple[Status, tuple[str, ...]]:
    """(LISTED, meanings) | (REFUSED, why) | (CLEAR, ()) for the zone's A records."""
    if not answers:
        return Status.CLEAR, ()
    listed, refused = [], []
    for answer in answers:
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            refused.append(f"{answer} is not an IPv4 address")
            continue
        if address not in _LOOPBACK:
            refused.append("an answer outside 127.0.0.0/8: the resolver rewrites NXDOMAIN "
                           "(use one that does not)")
        elif zone.bitmask:
            _read_bits(zone, int(address) & 0xFF, listed, refused)
        elif answer in zone.errors:
            refused.append(zone.errors[answer])
        else:
            listed.append(zone.answers.get(answer, f"listed ({answer})"))
    if listed:
        return Status.LISTED, tuple(dict.fromkeys(listed))
    return Status.REFUSED, tuple(dict.fromkeys(refused))


_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def _read_bits(zone: Zone, bits: int, listed: list[str], refused: list[str]) -> None:
    """SURBL/URIBL: each bit of the last octet is a list; an error bit spoils the answer."""
    errors = [why for bit, why in zone.errors.items() if bits & int(bit)]
    if errors:
        refused.extend(errors)
        return
    for bit in range(1, 8):
        if bits & (1 << bit):
            listed.append(zone.answers.get(str(1 << bit), f"listed (bit {1 << bit})"))


async def look_up(resolver: Resolver, zone: Zone, target: str, kind: Kind) -> Verdict:
    """Ask `zone` about `target`; for a listing, its TXT reason too."""
    name = question(target, zone.name)
    try:
        answer = await resolver.query(name, "A")
    except DnsTemporaryError:
        return Verdict(zone, target, kind, Status.UNANSWERED)
    status, meanings = read(zone, answer.records)
    reason = ""
    if status is Status.LISTED:
        try:
            reason = " ".join((await resolver.query(name, "TXT")).records)
        except DnsTemporaryError:
            pass
    return Verdict(zone, target, kind, status, answer.records, meanings, reason)

"""`relay doctor DOMAIN`: the domain's SPF, DKIM and DMARC as published, against relay.yaml;
its blocklist listings and what its DMARC aggregate reports say (`watch/doctor_checks.py`).

Owns the checks a domain owner runs before sending through relay, and the DNS records that
fix what is missing or wrong:
- SPF (RFC 7208): exactly one `v=spf1` record (§3.2); its DNS-querying terms, at most 10
  (§4.6.4); for the domain's route with an `spf` policy, `check_host` of every egress IP is
  `pass`, else the `include:` to add, merged into the existing record (never a second one).
- DKIM (RFC 6376 §3.6.1): the key record of each configured selector is published and its
  `p=` is the public half of the configured private key; key type and size (RFC 8301:
  RSA 2048 bits recommended).
- DMARC (RFC 7489): a policy governs the domain, with `rua` reports; relay's signatures
  align with From as the policy's `adkim` asks; else `p=none` with reports, the safe start.

DNS is the injected resolver. A temporary DNS failure is a result (ERROR), never a crash.
Statuses: OK, WARN (works, could be better), MISSING, WRONG, ERROR; only OK and WARN pass.
"""
from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import TextIO

from cryptography.hazmat.primitives.serialization import load_der_public_key

from relay.checks import dmarc
from relay.checks.spf import MAX_LOOKUPS, SpfEvaluator, SpfResult
from relay.checks.spf_gate import fix_for
from relay.config import Config, DkimKey, Route
from relay.dns import DnsTemporaryError, Resolver
from relay.errors import ConfigError
from relay.doctor_report import Report, Status
from relay.signing import dkim
from relay.watch import doctor_checks
from relay.watch.aggregate import AggregateReport

PROBE_IP = "192.0.2.1"        # TEST-NET-1 (RFC 5737): matches no term, so every term is counted


def configured_domain(config: Config, name: str) -> str:
    """The `domains:` key for `name`, or ConfigError."""
    wanted = name.strip().lower().rstrip(".")
    for domain in config.domains:
        if domain.lower() == wanted:
            return domain
    known = ", ".join(sorted(config.domains)) or "none"
    raise ConfigError([f"{wanted} is not one of the configured domains (domains: {known})"])


async def examine(config: Config, domain: str, resolver: Resolver,
                  reports: list[AggregateReport] | None = None, now: float = 0.0) -> Report:
    """Every check of a configured domain, in order: SPF, DKIM, DMARC, blocklists, and
    (given the stored DMARC aggregate reports, `None` when the state could not be read)
    what the reports say."""
    report = Report(domain, config.domains[domain].route)
    checks = [("SPF", _spf), ("DKIM", _dkim), ("DMARC", _dmarc),
              ("Blocklists", doctor_checks.blocklists)]
    if reports is not None:
        checks.append(("DMARC", lambda r, c, d, res: doctor_checks.dmarc_reports(
            r, c, d, res, reports, now)))
    for area, check in checks:
        try:
            await check(report, config, domain, resolver)
        except DnsTemporaryError as exc:
            report.add(area, "DNS", Status.ERROR, f"DNS temporary error ({exc}): try again later")
    return report


def run(config: Config, name: str, resolver: Resolver, as_json: bool = False,
        out: TextIO | None = None, reports: list[AggregateReport] | None = None,
        now: float = 0.0) -> int:
    """`relay doctor`: examine, print, and return the exit code (0: all OK or WARN)."""
    domain = configured_domain(config, name)
    report = asyncio.run(examine(config, domain, resolver, reports, now))
    out = out or sys.stdout
    out.write(json.dumps(report.as_dict(), indent=2) + "\n" if as_json else render(report))
    return 0 if report.ok else 1


# --- SPF ------------------------------------------------------------------------------

def _is_spf(record: str) -> bool:
    return record.lower() == "v=spf1" or record.lower().startswith("v=spf1 ")


def _is_final(term: str) -> bool:
    """`all` (whatever its qualifier) or `redirect=`: nothing after them is evaluated."""
    return term.lstrip("+-~?").lower() == "all" or term.lower().startswith("redirect=")


def merge_spf(records: list[str], additions: list[str]) -> str:
    """One SPF record: the first record with `additions` (and the terms of any other
    records) inserted before its final `all` or `redirect=` term."""
    terms = records[0].split()[1:]
    at = next((i for i, term in enumerate(terms) if _is_final(term)), len(terms))
    seen = {term.lower() for term in terms}
    extra = [t for record in records[1:] for t in record.split()[1:] if not _is_final(t)]
    for term in extra + additions:
        if term.lower() not in seen:
            seen.add(term.lower())
            terms.insert(at, term)
            at += 1
    return " ".join(["v=spf1", *terms])


def _needed_terms(route: Route) -> list[str]:
    if route.spf.include:
        return [f"include:{route.spf.include}"]
    return [f"ip{'6' if ':' in ip else '4'}:{ip}" for ip in route.spf.egress_ips]


async def _spf(report: Report, config: Config, domain: str, resolver: Resolver) -> None:
    route = config.routes[report.route]
    checked = route.spf is not None and route.spf.mode != "off" and route.spf.egress_ips
    needed = _needed_terms(route) if checked else []
    answer = await resolver.query(domain, "TXT")
    records = [r for r in answer.records if _is_spf(r)]
    if not records and not needed:
        report.add("SPF", "record", Status.WARN, f"no v=spf1 TXT record at {domain} (routes."
                   f"{report.route}.spf is not set: relay cannot tell what it should include)")
        return
    if not records:
        report.add("SPF", "record", Status.MISSING, f"no v=spf1 TXT record at {domain}")
        report.publish(domain, f"v=spf1 {' '.join(needed)} ~all",
                       f"SPF: authorize route {report.route}")
        return
    if len(records) > 1:
        report.add("SPF", "record", Status.WRONG, f"{len(records)} SPF records (one is allowed, "
                   f"receivers see a permerror): {' | '.join(records)}")
        report.publish(domain, merge_spf(records, needed),
                       f"SPF: one record replacing the {len(records)} published")
        return
    report.add("SPF", "record", Status.OK, records[0])
    evaluator = SpfEvaluator(resolver)
    await _spf_lookups(report, evaluator, domain)
    if checked:
        missing = await _spf_route(report, evaluator, resolver, domain, route, records[0])
        if missing:
            report.publish(domain, merge_spf(records, missing),
                           f"SPF: add {' '.join(missing)} to the current record (replaces it)")


async def _spf_lookups(report: Report, evaluator: SpfEvaluator, domain: str) -> None:
    outcome = await evaluator.check_host(PROBE_IP, domain, f"postmaster@{domain}")
    if outcome.result is SpfResult.TEMPERROR:
        report.add("SPF", "lookups", Status.ERROR, f"DNS temporary error: {outcome.problem}")
    elif outcome.result is SpfResult.PERMERROR:
        report.add("SPF", "lookups", Status.WRONG, f"permerror: {outcome.problem}")
    else:
        status = Status.WARN if outcome.lookups >= MAX_LOOKUPS - 1 else Status.OK
        close = ", close to the limit" if status is Status.WARN else ""
        report.add("SPF", "lookups", status,
                   f"{outcome.lookups} of {MAX_LOOKUPS} DNS lookups{close}")


async def _spf_route(report: Report, evaluator: SpfEvaluator, resolver: Resolver, domain: str,
                     route: Route, record: str) -> list[str]:
    """Check the route's egress IPs; return the terms to add to the record."""
    label = f"route {report.route}"
    ips = route.spf.egress_ips
    outcomes = await asyncio.gather(*(evaluator.check_host(ip, domain, f"postmaster@{domain}")
                                      for ip in ips))
    failed = [(ip, o) for ip, o in zip(ips, outcomes) if o.result is not SpfResult.PASS]
    if not failed:
        report.add("SPF", label, Status.OK, f"{', '.join(ips)}: pass")
        return []
    ip, outcome = failed[0]
    said = f"{ip}: {outcome.result.value}" + (f" ({outcome.problem})" if outcome.problem else "")
    if outcome.result is SpfResult.TEMPERROR:
        report.add("SPF", label, Status.ERROR, said)
        return []
    if outcome.result is SpfResult.PERMERROR:
        report.add("SPF", label, Status.WRONG, said)
        return []
    present = await _reachable_terms(resolver, record)
    missing = [term for term in _needed_terms(route) if term.lower() not in present]
    if missing:
        report.add("SPF", label, Status.WRONG, f"{said}; {fix_for(report.route, route, domain)}")
    else:
        report.add("SPF", label, Status.WRONG, f"{said} although {' '.join(_needed_terms(route))} "
                   "is there: a term before it decides first, or the route's egress_ips are stale")
    return missing


async def _reachable_terms(resolver: Resolver, record: str, budget: int = MAX_LOOKUPS) -> set[str]:
    """The terms of `record` and of the records its includes and redirect reach, lowercased
    (so `include:spf.brevo.com` counts as present through `include:_spf.acme.fr`)."""
    terms, todo, seen = set(), [record], set()
    while todo and len(seen) <= budget:
        for term in todo.pop().lower().split()[1:]:
            term = term.removeprefix("+")
            terms.add(term)
            if term.startswith(("redirect=", "include:")):
                target = term[9:] if term.startswith("redirect=") else term[8:]
            else:
                continue
            if target in seen or "%" in target:
                continue
            seen.add(target)
            answer = await resolver.query(target, "TXT")
            todo.extend(r for r in answer.records if _is_spf(r))
    return terms


# --- DKIM -----------------------------------------------------------------------------

async def _dkim(report: Report, config: Config, domain: str, resolver: Resolver) -> None:
    keys = config.domains[domain].dkim
    if not keys:
        report.add("DKIM", "keys", Status.MISSING, f"no DKIM key configured: run `relay keys "
                   f"generate {domain} --selector S` and add it to domains.{domain}.dkim")
    for spec in keys:
        await _dkim_key(report, domain, spec, resolver)


async def _dkim_key(report: Report, domain: str, spec: DkimKey, resolver: Resolver) -> None:
    label, name = f"selector {spec.selector}", f"{spec.selector}._domainkey.{domain}"
    try:
        key = dkim.load_key(domain, spec.selector, spec.private_key, spec.algorithm)
    except dkim.KeyError_ as exc:
        report.add("DKIM", label, Status.WRONG, f"configured key unusable: {exc}")
        return
    expected, kind = dkim.public_record(key), _key_kind(key)
    answer = await resolver.query(name, "TXT")
    published = [r for r in answer.records if "p" in _tags(r)]
    if len(published) == 1 and _tags(published[0])["p"] == _tags(expected)["p"]:
        weak = key.algorithm == dkim.RSA_SHA256 and key.key.key_size < 2048
        report.add("DKIM", label, Status.WARN if weak else Status.OK, f"{name} published, "
                   f"{kind}" + ("; 2048 bits recommended (RFC 8301)" if weak else ""))
        return
    if not published:
        status, found = Status.MISSING, f"no key record at {name} (configured: {kind})"
    elif len(published) > 1:
        status, found = Status.WRONG, f"{len(published)} key records at {name} (publish one)"
    elif not _tags(published[0])["p"]:
        status, found = Status.WRONG, f"the key at {name} is revoked (empty p=)"
    else:
        status, found = Status.WRONG, (f"the key at {name} ({_published_kind(_tags(published[0]))})"
                                       f" is not the configured one ({kind})")
    report.add("DKIM", label, status, found)
    report.publish(name, expected, f"DKIM: the public key of selector {spec.selector}")


def _tags(record: str) -> dict[str, str]:
    """DKIM key record tags (RFC 6376 §3.6.1); whitespace inside values is dropped."""
    tags = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), "".join(value.split()))
    return tags


def _key_kind(key: dkim.SigningKey) -> str:
    if key.algorithm == dkim.RSA_SHA256:
        return f"RSA {key.key.key_size} bits"
    return "Ed25519"


def _published_kind(tags: dict[str, str]) -> str:
    try:
        raw = base64.b64decode(tags["p"], validate=True)
        if tags.get("k", "rsa").lower() == "ed25519":
            return "Ed25519" if len(raw) == 32 else "a malformed Ed25519 key"
        return f"RSA {load_der_public_key(raw).key_size} bits"
    except (ValueError, TypeError, AttributeError):
        return "an unreadable key"


# --- DMARC ----------------------------------------------------------------------------

async def _dmarc(report: Report, config: Config, domain: str, resolver: Resolver) -> None:
    name, suggestion = f"_dmarc.{domain}", dmarc.suggested_record(domain)
    try:
        policy = await dmarc.find_policy(resolver, domain)
    except dmarc.DmarcRecordError as exc:
        policy = None
        report.add("DMARC", "policy", Status.WRONG, f"{exc}: receivers apply no DMARC policy")
        report.publish(name, suggestion, "DMARC: monitor only (p=none), with aggregate reports")
    else:
        if policy is None:
            organizational = dmarc.organizational_domain(domain)
            also = f" nor at _dmarc.{organizational}" if organizational != domain else ""
            report.add("DMARC", "policy", Status.MISSING, f"no DMARC record at {name}{also}")
            report.publish(name, suggestion, "DMARC: monitor only (p=none), with aggregate reports")
        else:
            _dmarc_policy(report, domain, policy)
    _dmarc_alignment(report, config, domain, policy)


def _dmarc_policy(report: Report, domain: str, policy: dmarc.DmarcPolicy) -> None:
    where = f"at {policy.name}" + ("" if policy.name == f"_dmarc.{domain}" else " (inherited)")
    found = f"p={policy.applied_to(domain)} {where}"
    found += f"; {policy.problem}" if policy.problem else ""
    report.add("DMARC", "policy", Status.WARN if policy.problem else Status.OK, found)
    if policy.rua:
        report.add("DMARC", "reports", Status.OK, f"rua={','.join(policy.rua)}")
    else:
        report.add("DMARC", "reports", Status.WARN, "no rua=: no aggregate reports; add "
                   f"rua=mailto:dmarc-reports@{domain} to {policy.name}")


def _dmarc_alignment(report: Report, config: Config, domain: str,
                     policy: dmarc.DmarcPolicy | None) -> None:
    mode = policy.adkim if policy else dmarc.RELAXED
    wording = "strict" if mode == dmarc.STRICT else "relaxed"
    signing = [domain] if config.domains[domain].dkim else []     # relay signs with d=<domain>
    if not signing:
        report.add("DMARC", "alignment", Status.WRONG, "no DKIM key, so DMARC cannot pass (the "
                   "provider's Return-Path never aligns SPF with From)")
    elif dmarc.aligned_domains(domain, signing, mode):
        report.add("DMARC", "alignment", Status.OK,
                   f"DKIM d={domain} aligns with From {domain} ({wording})")
    else:
        report.add("DMARC", "alignment", Status.WRONG,
                   f"DKIM d={','.join(signing)} does not align with From {domain} ({wording})")


# --- output ---------------------------------------------------------------------------

def render(report: Report) -> str:
    """The human report: one line per check, then the records to publish."""
    width = max([22] + [len(c.area + c.name) + 1 for c in report.checks])
    lines = [f"relay doctor {report.domain} (route {report.route})", "",
             f"  {'CHECK':<{width}} {'STATUS':<8} FOUND"]
    for c in report.checks:
        lines.append(f"  {c.area + ' ' + c.name:<{width}} {c.status.value:<8} {c.found}")
    if report.records:
        lines += ["", "Records to publish:"]
        for r in report.records:
            strings = " ".join(f'"{s}"' for s in r.strings)
            lines += [f"  # {r.reason}", f"  {r.name}. IN {r.type} {strings}"]
    problems = sum(c.status not in (Status.OK, Status.WARN) for c in report.checks)
    lines += ["", f"{report.domain}: " + ("ready to send through relay" if report.ok else
                                         f"{problems} problem(s) to fix")]
    return "\n".join(lines) + "\n"

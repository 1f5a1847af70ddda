"""relay.checks.spf_gate: the SPF policy at MAIL FROM, per route.

The gate runs the real evaluator on an in-memory resolver and a fake clock: enforce refuses
with the reply that tells the domain's owner what to fix, warn only logs, off asks nothing;
decisions are cached per (domain, route) for their TTL, temporary failures never.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import yaml

from relay.checks.spf import SpfEvaluator
from relay.checks.spf_gate import SpfGate
from relay.config import Config, parse
from relay.errors import PolicyError, TemporaryError
from tests.unit.checks.test_spf import FakeDns
from tests.fakes.clock import FakeClock

BREVO = {"mode": "enforce", "egress_ips": ["1.179.112.1"], "include": "spf.brevo.com"}
FIX = "add include:spf.brevo.com to the SPF record of acme.fr"


class HangingDns(FakeDns):
    """A resolver whose every query waits forever, like a nameserver that never answers."""

    async def query(self, name: str, rdtype: str):
        self.queries.append((name, rdtype))
        await asyncio.Event().wait()


def make_config(spf: dict | None = BREVO, timeout: str = "0.2s", **routes: dict) -> Config:
    provider = {"host": "127.0.0.1"} | ({"spf": spf} if spf is not None else {})
    data = {"server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
            "dns": {"timeout": timeout},
            "domains": {"acme.fr": {"route": "provider"}},
            "routes": {"provider": provider, **routes}}
    return parse(yaml.safe_dump(data), Path("."))


@pytest.fixture
def dns() -> FakeDns:
    dns = FakeDns()
    dns.spf("spf.brevo.com", "v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all", ttl=300)
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com ~all", ttl=3600)
    return dns


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def gate(dns: FakeDns, clock: FakeClock, config: Config | None = None) -> SpfGate:
    return SpfGate(config or make_config(), SpfEvaluator(dns), clock)


def authorize(g: SpfGate, domain: str = "acme.fr", route: str = "provider") -> None:
    asyncio.run(g.authorize(domain, route))


def refusal(g: SpfGate, domain: str = "acme.fr", route: str = "provider"):
    with pytest.raises((PolicyError, TemporaryError)) as caught:
        authorize(g, domain, route)
    return caught.value


# --- enforce --------------------------------------------------------------------------

def test_domain_including_the_provider_is_accepted(dns, clock):
    """acme.fr includes spf.brevo.com, so Brevo's egress address passes: no refusal."""
    authorize(gate(dns, clock))
    assert ("spf.brevo.com", "TXT") in dns.queries


@pytest.mark.parametrize("record, result", [
    ("v=spf1 ip4:192.0.2.0/24 -all", "fail"),
    ("v=spf1 ip4:192.0.2.0/24 ~all", "softfail"),
    ("v=spf1 ip4:192.0.2.0/24 ?all", "neutral"),
    (None, "none"),
])
def test_not_authorized_is_550_5_7_23_saying_what_to_add(dns, clock, record, result):
    """fail, softfail, neutral and none all refuse with 550 5.7.23 naming the domain, the
    route, the result and the include the owner must add."""
    del dns.records[("acme.fr", "TXT")]
    if record:
        dns.spf("acme.fr", record)
    error = refusal(gate(dns, clock))
    assert isinstance(error, PolicyError)
    assert (error.reply.code, error.reply.enhanced) == (550, "5.7.23")
    text = error.reply.text
    assert "acme.fr" in text and "route provider" in text and f"result {result}" in text
    assert FIX in text


def test_fix_names_the_addresses_when_the_route_has_no_include(dns, clock):
    """Without `include`, the reply tells the owner which addresses to authorize."""
    dns.spf("acme.fr", "v=spf1 -all")
    config = make_config({"mode": "enforce", "egress_ips": ["192.0.2.7", "2001:db8::7"]})
    error = refusal(gate(dns, clock, config))
    fix = "authorize ip4:192.0.2.7 ip6:2001:db8::7 in the SPF record of acme.fr"
    assert fix in error.reply.text


def test_permerror_is_550_5_5_2_naming_the_problem(dns, clock):
    """A broken record (here two SPF records) refuses with 550 5.5.2 saying what is broken."""
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com -all", "v=spf1 mx -all")
    error = refusal(gate(dns, clock))
    assert isinstance(error, PolicyError)
    assert (error.reply.code, error.reply.enhanced) == (550, "5.5.2")
    assert "acme.fr" in error.reply.text and "2 SPF records" in error.reply.text


def test_temperror_is_451_4_4_3(dns, clock):
    """A DNS failure anywhere in the evaluation defers with 451 4.4.3."""
    dns.temporary.add("spf.brevo.com")
    error = refusal(gate(dns, clock))
    assert isinstance(error, TemporaryError)
    assert (error.reply.code, error.reply.enhanced) == (451, "4.4.3")
    assert "acme.fr" in error.reply.text


def test_resolver_that_never_answers_is_451_within_the_timeout(clock):
    """A hanging resolver is cut at dns.timeout (0.2 s here) and deferred with 451 4.4.3."""
    started = time.monotonic()
    error = refusal(gate(HangingDns(), clock, make_config(timeout="0.2s")))
    elapsed = time.monotonic() - started
    assert (error.reply.code, error.reply.enhanced) == (451, "4.4.3")
    assert elapsed < 2.0


def test_every_egress_address_must_pass(dns, clock):
    """One egress address outside the domain's SPF is enough to refuse."""
    config = make_config(BREVO | {"egress_ips": ["1.179.112.1", "172.246.240.9", "203.0.113.9"]})
    error = refusal(gate(dns, clock, config))
    assert (error.reply.code, error.reply.enhanced) == (550, "5.7.23")
    assert "result softfail" in error.reply.text
    both_brevo = make_config(BREVO | {"egress_ips": ["1.179.112.1", "172.246.240.9"]})
    authorize(gate(dns, clock, both_brevo))


# --- warn and off ---------------------------------------------------------------------

def test_warn_mode_accepts_and_logs_the_refusal(dns, clock, caplog):
    """In warn mode a domain that would be refused is accepted, and the reason is logged."""
    dns.spf("acme.fr", "v=spf1 -all")
    with caplog.at_level(logging.WARNING, logger="relay.spf"):
        authorize(gate(dns, clock, make_config(BREVO | {"mode": "warn"})))
    assert any(FIX in r.getMessage() and "warn" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spf", [{"mode": "off"}, None])
def test_off_or_no_spf_checks_nothing(dns, clock, spf):
    """mode: off, or a route without `spf`, accepts without a single DNS query."""
    dns.spf("acme.fr", "v=spf1 -all", "v=spf1 +all")      # would be refused if looked at
    authorize(gate(dns, clock, make_config(spf)))
    assert dns.queries == []


# --- cache ----------------------------------------------------------------------------

def test_decision_is_cached_until_its_ttl_passes(dns, clock):
    """An accepted domain is not looked up again until the smallest TTL seen (300 s) passes."""
    g = gate(dns, clock)
    authorize(g)
    first = len(dns.queries)
    assert first > 0
    authorize(g)
    clock.t += 299
    authorize(g)
    assert len(dns.queries) == first
    clock.t += 2
    authorize(g)
    assert len(dns.queries) == 2 * first


def test_refusal_is_cached_too(dns, clock):
    """A refusal is remembered for its TTL: the same 550 without asking DNS again."""
    dns.spf("acme.fr", "v=spf1 -all", ttl=600)
    g = gate(dns, clock)
    first = refusal(g)
    count = len(dns.queries)
    again = refusal(g)
    assert again.reply == first.reply
    assert len(dns.queries) == count
    clock.t += 601
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com -all")   # the owner fixed it
    authorize(g)


def test_cache_is_per_domain_and_route(dns, clock):
    """Another route or another domain is decided on its own."""
    dns.spf("other.fr", "v=spf1 -all")
    config = make_config(mailjet={"host": "127.0.0.1", "spf": BREVO})
    g = gate(dns, clock, config)
    authorize(g, "acme.fr", "provider")
    count = len(dns.queries)
    authorize(g, "acme.fr", "mailjet")
    assert len(dns.queries) > count
    with pytest.raises(PolicyError):
        authorize(g, "other.fr", "provider")
    assert ("other.fr", "TXT") in dns.queries


def test_temperror_is_not_cached(dns, clock):
    """After a temporary failure the next MAIL FROM asks DNS again, and can then pass."""
    dns.temporary.add("spf.brevo.com")
    g = gate(dns, clock)
    assert isinstance(refusal(g), TemporaryError)
    dns.temporary.clear()
    count = len(dns.queries)
    authorize(g)
    assert len(dns.queries) > count


def test_timeout_is_not_cached(dns, clock):
    """A DNS timeout is not remembered either: the next attempt asks again."""
    hanging = HangingDns()
    g = gate(hanging, clock, make_config(timeout="0.1s"))
    refusal(g)
    refusal(g)
    assert hanging.queries.count(("acme.fr", "TXT")) == 2

"""relay.checks.dmarc: policy discovery (RFC 7489 §6.6.3), the record's tags, DKIM identifier
alignment (§3.1), and the background DmarcMonitor's warnings."""
from __future__ import annotations

import asyncio
import logging

import pytest

from relay.checks import dmarc
from relay.checks.dmarc import (DmarcMonitor, DmarcRecordError, aligned, aligned_domains,
                                find_policy, organizational_domain, parse_record)
from relay.dns import DnsTemporaryError
from tests.fakes.dns_server import ZoneResolver
from tests.fakes.clock import FakeClock


# --- organizational domain and alignment ---------------------------------------------

@pytest.mark.parametrize("domain, organizational", [
    ("acme.fr", "acme.fr"), ("mail.news.acme.fr", "acme.fr"), ("ACME.FR.", "acme.fr"),
    ("example.co.uk", "example.co.uk"), ("mail.example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"),
])
def test_organizational_domain_follows_the_public_suffix_list(domain, organizational):
    """The organizational domain is the registered name under its public suffix, however
    many labels the suffix has (co.uk)."""
    assert organizational_domain(domain) == organizational


def test_relaxed_alignment_is_same_organizational_domain():
    """Relaxed: a signature of any name under the same organizational domain aligns."""
    assert aligned("acme.fr", "acme.fr")
    assert aligned("news.acme.fr", "acme.fr")
    assert aligned("acme.fr", "mail.acme.fr")
    assert aligned("a.example.co.uk", "b.example.co.uk")
    assert not aligned("example.co.uk", "other.co.uk")       # co.uk is a public suffix
    assert not aligned("acme.fr", "acme.com")
    assert not aligned("acme.fr", "brevo.com")


def test_strict_alignment_is_identity():
    """Strict: only the identical domain aligns (case and final dot aside)."""
    assert aligned("acme.fr", "ACME.fr.", dmarc.STRICT)
    assert not aligned("news.acme.fr", "acme.fr", dmarc.STRICT)


def test_aligned_domains_picks_the_aligned_signatures():
    """Of the domains relay signs with, the aligned ones are returned."""
    assert aligned_domains("acme.fr", ["brevo.com", "acme.fr"]) == ["acme.fr"]
    assert aligned_domains("news.acme.fr", ["acme.fr"], dmarc.STRICT) == []
    assert aligned_domains("acme.fr", []) == []


# --- record syntax -------------------------------------------------------------------

def test_tags_are_parsed():
    """p, sp, adkim, aspf and rua are read; tag names are case-insensitive; pct is ignored."""
    policy = parse_record("v=DMARC1; P=Reject; sp=quarantine; adkim=s; aspf=r; pct=50; "
                          "rua=mailto:a@acme.fr, mailto:b@acme.fr")
    assert (policy.p, policy.sp, policy.adkim, policy.aspf) == ("reject", "quarantine", "s", "r")
    assert policy.rua == ("mailto:a@acme.fr", "mailto:b@acme.fr")
    assert policy.problem == ""


def test_defaults_are_relaxed_alignment_and_no_reports():
    """Without adkim/aspf alignment is relaxed; without rua there are no reports."""
    policy = parse_record("v=DMARC1;p=none")
    assert (policy.p, policy.sp, policy.adkim, policy.aspf, policy.rua) == ("none", None, "r", "r", ())


@pytest.mark.parametrize("record", [
    "p=none; v=DMARC1",            # v must come first
    "v=DMARC2; p=none",
    "v=dmarc1; p=none",            # the version is case-sensitive
    "v=DMARC1; p=discard",         # invalid p and no rua
    "v=DMARC1; rua=mailto:a@acme.fr; nonsense",
])
def test_records_receivers_discard(record):
    """A record without v=DMARC1 first, or with an invalid p and no rua, is an error."""
    with pytest.raises(DmarcRecordError):
        parse_record(record)


def test_invalid_p_with_rua_reads_as_none():
    """§6.6.3 step 6: a bad or missing p with a valid rua acts as p=none, and says so."""
    policy = parse_record("v=DMARC1; p=bogus; rua=mailto:r@acme.fr")
    assert policy.p == "none" and "p='bogus'" in policy.problem
    assert parse_record("v=DMARC1; rua=mailto:r@acme.fr").problem == "p= is missing"


# --- discovery ------------------------------------------------------------------------

def discover(zone: dict, domain: str):
    resolver = ZoneResolver(zone)
    return asyncio.run(find_policy(resolver, domain)), resolver.queries


def test_policy_at_the_domain():
    """The record at _dmarc.<domain> governs it; other TXT records there are ignored."""
    policy, queries = discover({("_dmarc.acme.fr", "TXT"): [
        "v=spf1 -all", "v=DMARC1; p=quarantine; rua=mailto:d@acme.fr"]}, "acme.fr")
    assert policy.p == "quarantine" and policy.name == "_dmarc.acme.fr"
    assert policy.applied_to("acme.fr") == "quarantine"
    assert queries == [("_dmarc.acme.fr", "TXT")]


def test_falls_back_to_the_organizational_domain_under_a_multi_label_suffix():
    """Without a record at _dmarc.<sub>, the organizational domain's applies, with its sp;
    the public suffix (co.uk) itself is never queried."""
    zone = {("_dmarc.example.co.uk", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"]}
    policy, queries = discover(zone, "mail.example.co.uk")
    assert policy.name == "_dmarc.example.co.uk"
    assert policy.applied_to("mail.example.co.uk") == "quarantine"
    assert queries == [("_dmarc.mail.example.co.uk", "TXT"), ("_dmarc.example.co.uk", "TXT")]


def test_no_policy_anywhere():
    """No record at the domain nor at its organizational domain: None, two queries at most."""
    policy, queries = discover({}, "news.acme.fr")
    assert policy is None
    assert queries == [("_dmarc.news.acme.fr", "TXT"), ("_dmarc.acme.fr", "TXT")]
    assert discover({}, "example.co.uk")[1] == [("_dmarc.example.co.uk", "TXT")]


def test_two_records_are_no_policy():
    """Two v=DMARC1 records: discovery stops (§6.6.3 step 5) with an error naming them."""
    zone = {("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}
    with pytest.raises(DmarcRecordError, match="2 DMARC records"):
        discover(zone, "acme.fr")


def test_dns_temporary_error_propagates():
    """A DNS failure is not 'no policy': the caller hears about it."""
    with pytest.raises(DnsTemporaryError):
        discover({("_dmarc.acme.fr", "TXT"): ZoneResolver.TIMEOUT}, "acme.fr")


# --- DmarcMonitor ---------------------------------------------------------------------

ZONE = {
    ("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=none; rua=mailto:d@acme.fr"],
    ("_dmarc.strict.fr", "TXT"): ["v=DMARC1; p=reject; adkim=s"],
}


def watch(monitor: DmarcMonitor, *observations) -> None:
    """Observe from inside a running loop, as the acceptance pipeline does, then wait."""
    async def go():
        for from_domain, signing in observations:
            assert monitor.observe(from_domain, signing) is None
        await monitor.idle()
    asyncio.run(go())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "relay.dmarc" and r.levelno == logging.WARNING]


def test_aligned_domain_with_policy_is_quiet(clock, caplog):
    """A domain with a policy, signed by its own key: nothing to say."""
    monitor = DmarcMonitor(ZoneResolver(ZONE), clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("acme.fr", ["acme.fr"]), ("news.acme.fr", ["acme.fr"]))
    assert warnings(caplog) == []


def test_missing_policy_warns_once_an_hour(clock, caplog):
    """No DMARC policy: one warning with the record to publish; the next observations of
    the hour do not even query DNS; an hour later the domain is checked again."""
    resolver = ZoneResolver(ZONE)
    monitor = DmarcMonitor(resolver, clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("other.fr", ["other.fr"]), ("OTHER.fr", ["other.fr"]))
        assert len(warnings(caplog)) == 1
        assert "other.fr publishes no DMARC policy" in warnings(caplog)[0]
        assert "v=DMARC1; p=none; rua=mailto:dmarc-reports@other.fr" in warnings(caplog)[0]
        queries = len(resolver.queries)
        clock.t += 3599
        watch(monitor, ("other.fr", ["other.fr"]))
        assert len(resolver.queries) == queries and len(warnings(caplog)) == 1
        clock.t += 1
        watch(monitor, ("other.fr", ["other.fr"]))
        assert len(warnings(caplog)) == 2


def test_unaligned_keys_warn(clock, caplog):
    """adkim=s and a signature of the parent domain: the warning names the mode and d=."""
    monitor = DmarcMonitor(ZoneResolver(ZONE | {
        ("_dmarc.news.strict.fr", "TXT"): ["v=DMARC1; p=reject; adkim=s"]}), clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("news.strict.fr", ["strict.fr"]), ("acme.fr", ["brevo.com"]))
    assert len(warnings(caplog)) == 2
    assert "strict alignment, d=strict.fr" in warnings(caplog)[0]
    assert "relaxed alignment, d=brevo.com" in warnings(caplog)[1]


def test_unsigned_mail_warns(clock, caplog):
    """No DKIM key at all for the domain: DMARC cannot pass, and the warning says so."""
    monitor = DmarcMonitor(ZoneResolver(ZONE), clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("acme.fr", []))
    assert len(warnings(caplog)) == 1 and "without a DKIM signature" in warnings(caplog)[0]


def test_unusable_record_warns(clock, caplog):
    """A record receivers discard is reported like a missing one, with the reason."""
    monitor = DmarcMonitor(ZoneResolver({("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=maybe"]}), clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("acme.fr", ["acme.fr"]))
    assert len(warnings(caplog)) == 1 and "no usable DMARC policy" in warnings(caplog)[0]


def test_dns_failure_is_logged_and_retried_sooner(clock, caplog):
    """A DNS temporary error warns nobody; the domain is checked again after `retry`."""
    zone = {("_dmarc.acme.fr", "TXT"): ZoneResolver.TIMEOUT}
    resolver = ZoneResolver(zone)
    monitor = DmarcMonitor(resolver, clock, retry=300)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("acme.fr", ["acme.fr"]))
        assert warnings(caplog) == [] and "DNS temporary error" in caplog.text
        clock.t += 300
        del zone[("_dmarc.acme.fr", "TXT")]
        watch(monitor, ("acme.fr", ["acme.fr"]))
    assert len(warnings(caplog)) == 1 and "publishes no DMARC policy" in warnings(caplog)[0]


def test_unexpected_errors_are_logged_never_raised(clock, caplog):
    """A resolver that blows up: observe() returns normally, the task logs the error."""
    class Broken:
        async def query(self, name, rdtype):
            raise RuntimeError("resolver bug")
    monitor = DmarcMonitor(Broken(), clock)
    with caplog.at_level(logging.INFO, "relay.dmarc"):
        watch(monitor, ("acme.fr", ["acme.fr"]))
    assert "resolver bug" in caplog.text


def test_observe_does_not_wait_for_dns(clock):
    """observe() returns while the lookup is still waiting for DNS."""
    gate = asyncio.Event()

    class Slow:
        async def query(self, name, rdtype):
            await gate.wait()
            return await ZoneResolver(ZONE).query(name, rdtype)

    async def go():
        monitor = DmarcMonitor(Slow(), clock)
        monitor.observe("acme.fr", ["acme.fr"])
        await asyncio.sleep(0)
        pending = monitor.pending
        gate.set()
        await monitor.idle()
        return pending, monitor.pending
    assert asyncio.run(go()) == (1, 0)


def test_cache_is_bounded(clock):
    """At most `max_domains` domains are remembered; the oldest is forgotten first."""
    resolver = ZoneResolver(ZONE)
    monitor = DmarcMonitor(resolver, clock, max_domains=2)
    watch(monitor, ("a.fr", ["a.fr"]), ("b.fr", ["b.fr"]), ("c.fr", ["c.fr"]))
    before = len(resolver.queries)
    watch(monitor, ("c.fr", ["c.fr"]))
    assert len(resolver.queries) == before                 # still remembered
    watch(monitor, ("a.fr", ["a.fr"]))
    assert len(resolver.queries) > before                  # forgotten, so checked again

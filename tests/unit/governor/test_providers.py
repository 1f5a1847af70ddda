"""relay.governor.providers: which mailbox provider a recipient is at, by domain then by MX.

DNS is a `ZoneResolver` (a zone dict in memory, `.queries` records every question, every
answer has its `ttl`) and time a FakeClock, so cache expiry is tested without waiting.
"""
from __future__ import annotations

import asyncio
import logging

import pytest

from relay.errors import ConfigError
from relay.governor.providers import OTHER, Provider, ProviderMap, load_mapping
from tests.fakes.clock import FakeClock
from tests.fakes.dns_server import ZoneResolver

ZONE = {
    ("acme.fr", "MX"): ["1 aspmx.l.google.com", "5 alt1.aspmx.l.google.com"],
    ("contoso.fr", "MX"): ["0 contoso-fr.mail.protection.outlook.com"],
    ("mixed.fr", "MX"): ["20 mx.acme-hosting.fr", "10 mx1.mail.icloud.com", "30 aspmx.l.google.com"],
    ("evil.fr", "MX"): ["10 mx.evilgoogle.com"],
    ("own.fr", "MX"): ["10 mx.own.fr"],
    ("nomx.fr", "A"): ["192.0.2.1"],                     # NODATA for MX
    ("nullmx.fr", "MX"): ["0 ."],                        # RFC 7505: accepts no mail
    ("slow.fr", "*"): ZoneResolver.TIMEOUT,
    ("broken.fr", "*"): ZoneResolver.SERVFAIL,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dns() -> ZoneResolver:
    return ZoneResolver(dict(ZONE), ttl=300)


@pytest.fixture
def pmap(dns, clock) -> ProviderMap:
    return ProviderMap(load_mapping(), dns, clock, failure_ttl=120)


def run(coro):
    return asyncio.run(coro)


def mx_queries(dns: ZoneResolver, domain: str) -> int:
    return dns.queries.count((domain, "MX"))


# --- the shipped mapping -------------------------------------------------------------------

def test_the_shipped_file_has_the_providers_reference_lists(pmap):
    """REFERENCE.md "Mailbox providers": google, microsoft, yahoo and the French ISPs."""
    mapping = load_mapping()
    assert {"google", "microsoft", "yahoo", "orange", "free", "sfr", "laposte"} <= set(mapping)
    assert mapping["google"].mx == ("google.com", "googlemail.com")
    assert mapping["microsoft"].mx == ("mail.protection.outlook.com", "olc.protection.outlook.com")
    assert pmap.names()[:3] == ["google", "microsoft", "yahoo"]
    assert pmap.names()[-1] == OTHER and OTHER not in mapping


@pytest.mark.parametrize(("domain", "provider"), [
    ("gmail.com", "google"), ("googlemail.com", "google"),
    ("outlook.com", "microsoft"), ("Outlook.FR.", "microsoft"), ("outlook.co.uk", "microsoft"),
    ("hotmail.fr", "microsoft"), ("live.com", "microsoft"), ("msn.com", "microsoft"),
    ("yahoo.fr", "yahoo"), ("yahoo.co.jp", "yahoo"), ("yahoo.com.br", "yahoo"),
    ("aol.com", "yahoo"), ("ymail.com", "yahoo"),
    ("orange.fr", "orange"), ("wanadoo.fr", "orange"), ("free.fr", "free"),
    ("sfr.fr", "sfr"), ("neuf.fr", "sfr"), ("laposte.net", "laposte"),
])
def test_a_listed_domain_is_its_provider_without_dns(pmap, dns, domain, provider):
    """The domain lists decide first, case-insensitive, a trailing dot ignored; no query."""
    assert pmap.by_domain(domain) == provider
    assert run(pmap.provider_of(domain)) == provider
    assert dns.queries == []


@pytest.mark.parametrize("domain", ["outlook", "outlook.evil.example.com", "myoutlook.com",
                                    "gmail.com.example", "mail.gmail.com", "live.acme.com",
                                    "hotmail.evil.com", "outlook.co.example"])
def test_a_wildcard_takes_a_top_level_domain_and_names_match_whole(pmap, domain):
    """`outlook.*` is outlook. then a top-level domain, or a country's second level (co.uk,
    com.br): never `outlook` alone, nor someone's domain (live.acme.com)."""
    assert pmap.by_domain(domain) is None


# --- by MX ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("domain", "provider"), [
    ("acme.fr", "google"),           # Google Workspace
    ("contoso.fr", "microsoft"),     # Microsoft 365
    ("mixed.fr", "apple"),           # the most preferred host with a provider decides
    ("evil.fr", OTHER),              # evilgoogle.com is not under google.com
    ("own.fr", OTHER),               # a host no provider claims
    ("nomx.fr", OTHER),              # no MX record
    ("nullmx.fr", OTHER),            # a null MX
    ("unknown.fr", OTHER),           # NXDOMAIN
])
def test_a_custom_domain_is_grouped_by_its_mx_hosts(pmap, dns, domain, provider):
    """MX hosts in preference order; the first under a provider's suffix (on a label boundary)
    decides; none, no MX or no domain at all is `other`."""
    assert run(pmap.provider_of(domain)) == provider
    assert dns.queries == [(domain, "MX")]


def test_the_lowest_preference_decides_whatever_the_record_order(dns, clock):
    """Preference 5 (microsoft) beats 10 (google), listed first."""
    dns.zone[("both.fr", "MX")] = ["10 aspmx.l.google.com", "5 both-fr.mail.protection.outlook.com"]
    pmap = ProviderMap(load_mapping(), dns, clock)
    assert run(pmap.provider_of("both.fr")) == "microsoft"


def test_an_mx_suffix_matches_the_host_itself_and_its_subdomains_only():
    """`google.com` matches google.com and x.google.com; never evilgoogle.com."""
    google = Provider("google", (), ("google.com",))
    assert google.has_mx("google.com") and google.has_mx("aspmx.l.google.com")
    assert not google.has_mx("evilgoogle.com") and not google.has_mx("google.com.evil.fr")


# --- caching -------------------------------------------------------------------------------

@pytest.mark.parametrize("domain", ["slow.fr", "broken.fr"])
def test_a_failed_lookup_is_other_and_kept_for_failure_ttl(pmap, dns, clock, domain, caplog):
    """TIMEOUT or SERVFAIL: `other`, never an exception, logged at info, and not asked again
    before `failure_ttl` has passed."""
    with caplog.at_level(logging.INFO, logger="relay.governor"):
        assert run(pmap.provider_of(domain)) == OTHER
    assert [r.levelno for r in caplog.records if domain in r.getMessage()] == [logging.INFO]
    clock.advance(119)
    assert run(pmap.provider_of(domain)) == OTHER
    assert mx_queries(dns, domain) == 1
    clock.advance(2)
    assert run(pmap.provider_of(domain)) == OTHER
    assert mx_queries(dns, domain) == 2


def test_any_resolver_exception_is_other(clock):
    """Even an unexpected error from the resolver never reaches the caller."""
    class Exploding:
        async def query(self, name, rdtype):
            raise RuntimeError("boom")
    assert run(ProviderMap(load_mapping(), Exploding(), clock).provider_of("acme.fr")) == OTHER


def test_an_answer_is_kept_for_its_ttl_then_asked_again(pmap, dns, clock):
    """A positive answer is cached for the answer's TTL (300 s here)."""
    assert run(pmap.provider_of("acme.fr")) == "google"
    clock.advance(299)
    assert run(pmap.provider_of("acme.fr")) == "google"
    assert mx_queries(dns, "acme.fr") == 1
    dns.zone[("acme.fr", "MX")] = ["10 acme-fr.mail.protection.outlook.com"]
    clock.advance(2)
    assert run(pmap.provider_of("acme.fr")) == "microsoft"
    assert mx_queries(dns, "acme.fr") == 2


def test_a_short_ttl_is_kept_at_least_60_seconds(dns, clock):
    """A 5 s TTL would mean a query per message: answers are kept 60 s at least."""
    dns.ttl = 5
    pmap = ProviderMap(load_mapping(), dns, clock)
    run(pmap.provider_of("acme.fr"))
    clock.advance(59)
    run(pmap.provider_of("acme.fr"))
    assert mx_queries(dns, "acme.fr") == 1
    clock.advance(2)
    run(pmap.provider_of("acme.fr"))
    assert mx_queries(dns, "acme.fr") == 2


def test_the_cache_drops_its_oldest_domain_when_full(dns, clock):
    """At `max_entries`, the oldest answer goes and is asked again when needed."""
    pmap = ProviderMap(load_mapping(), dns, clock, max_entries=2)
    for domain in ("acme.fr", "contoso.fr", "own.fr", "contoso.fr", "acme.fr"):
        run(pmap.provider_of(domain))
    assert mx_queries(dns, "acme.fr") == 2 and mx_queries(dns, "contoso.fr") == 1


def test_concurrent_lookups_of_a_domain_share_one_query(pmap, dns):
    """Ten recipients of one domain at once: one MX question."""
    async def go():
        return await asyncio.gather(*(pmap.provider_of("acme.fr") for _ in range(10)))
    assert run(go()) == ["google"] * 10
    assert mx_queries(dns, "acme.fr") == 1


def test_providers_looks_each_domain_up_once(pmap, dns):
    """One answer per address, in order; each distinct domain asked once; no domain is other."""
    addresses = ["a@acme.fr", "b@ACME.fr", "c@gmail.com", "d@contoso.fr", "e@acme.fr",
                 "postmaster", "f@", "\"x@y\"@own.fr"]
    assert run(pmap.providers(addresses)) == [
        "google", "google", "google", "microsoft", "google", OTHER, OTHER, OTHER]
    assert sorted(dns.queries) == [("acme.fr", "MX"), ("contoso.fr", "MX"), ("own.fr", "MX")]


# --- the override file ---------------------------------------------------------------------

def test_an_override_replaces_a_provider_and_adds_new_ones(tmp_path, dns, clock):
    """Its `google` replaces the shipped one (in place); `proton` is added; the rest stay."""
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n"
                    "  google: {domains: [gmail.com]}\n"
                    "  proton: {domains: [proton.me, protonmail.*], mx: [protonmail.ch]}\n")
    mapping = load_mapping(path)
    assert mapping["google"] == Provider("google", ("gmail.com",), ())
    assert mapping["proton"].domains == ("proton.me", "protonmail.*")
    assert "microsoft" in mapping and list(mapping)[0] == "google" and list(mapping)[-1] == "proton"
    pmap = ProviderMap(mapping, dns, clock)
    assert pmap.by_domain("googlemail.com") is None
    assert pmap.by_domain("protonmail.com") == "proton"
    dns.zone[("pm.fr", "MX")] = ["10 mail.protonmail.ch"]
    assert run(pmap.provider_of("acme.fr")) == OTHER        # google's mx suffixes are gone
    assert run(pmap.provider_of("pm.fr")) == "proton"


@pytest.mark.parametrize(("text", "message"), [
    ("providers:\n  google: {domains: [gmail.com], ttl: 3}\n",
     "providers.google.ttl: unknown key"),
    ("providers: {}\nextra: 1\n", "extra: unknown key"),
    ("providers:\n  other: {domains: [example.com]}\n", "providers.other: `other`"),
    ("providers:\n  google: {mx: google.com}\n",
     "providers.google.mx: expected a list of host suffixes"),
    ("providers:\n  google: {mx: ['*.google.com']}\n",
     "providers.google.mx: expected a list of host suffixes"),
    ("providers:\n  google: {domains: [gm*il.com]}\n", "providers.google.domains: expected"),
    ("providers:\n  google: {}\n", "providers.google: needs"),
    ("providers:\n  Google!: {domains: [gmail.com]}\n", "providers.Google!: a provider name"),
    ("providers: [google]\n", "expected a mapping with a `providers` mapping"),
    ("providers:\n  google: {domains: [gmail.com\n", "not valid YAML"),
])
def test_a_malformed_override_is_a_config_error_naming_file_and_path(tmp_path, text, message):
    """Each problem names the file and the YAML path; nothing is silently ignored."""
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_mapping(path)
    assert any(e.startswith(f"{path}: ") and message in e for e in caught.value.errors), \
        caught.value.errors


def test_an_unreadable_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_mapping(tmp_path / "missing.yaml")

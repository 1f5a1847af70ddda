"""relay.checks.spf: RFC 7208 check_host on an in-memory resolver.

The resolver is a dict of (name, type) -> records; a name marked temporary raises
DnsTemporaryError, a name with no records is NXDOMAIN (or NODATA when it has records of
another type): both are "void lookups" (RFC 7208 §4.6.4). Every query is recorded, so tests
can say exactly which names a macro expanded to.
"""
from __future__ import annotations

import asyncio

import pytest

from relay.checks.spf import MAX_LOOKUPS, SpfEvaluator, SpfOutcome, SpfResult
from relay.dns import DnsAnswer, DnsTemporaryError

BREVO_IP = "1.179.112.1"              # inside Brevo's 1.179.112.0/20
BREVO_IP_2 = "172.246.255.254"         # inside Brevo's 172.246.240.0/20
OUTSIDE = "1.179.128.1"               # just past 1.179.112.0/20
CLIENT = "192.0.2.10"
CLIENT6 = "2001:db8::10"


class FakeDns:
    """An in-memory Resolver: `add(name, type, *records, ttl=)`; `temporary` names fail."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[tuple[str, ...], int]] = {}
        self.temporary: set[str] = set()
        self.queries: list[tuple[str, str]] = []

    def add(self, name: str, rdtype: str, *records: str, ttl: int = 3600) -> "FakeDns":
        self.records[(name, rdtype)] = (records, ttl)
        return self

    def spf(self, name: str, *records: str, ttl: int = 3600) -> "FakeDns":
        return self.add(name, "TXT", *records, ttl=ttl)

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.queries.append((name, rdtype))
        if name in self.temporary:
            raise DnsTemporaryError(f"{rdtype} {name}: Timeout")
        if (name, rdtype) in self.records:
            records, ttl = self.records[(name, rdtype)]
            return DnsAnswer(records, ttl)
        exists = any(n == name for n, _ in self.records)
        return DnsAnswer((), 300, nxdomain=not exists)


def check(dns: FakeDns, ip: str, domain: str = "acme.fr", sender: str = "") -> SpfOutcome:
    return asyncio.run(SpfEvaluator(dns).check_host(ip, domain, sender or f"postmaster@{domain}"))


def result(dns: FakeDns, ip: str, domain: str = "acme.fr", sender: str = "") -> SpfResult:
    return check(dns, ip, domain, sender).result


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns()


@pytest.fixture
def brevo(dns) -> FakeDns:
    """REFERENCE.md's example: acme.fr authorizes Brevo through include:spf.brevo.com."""
    dns.spf("spf.brevo.com", "v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all", ttl=300)
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com ~all")
    return dns


# --- the seven results ----------------------------------------------------------------

def test_brevo_egress_passes_through_the_include(brevo):
    """Both Brevo ranges pass for a domain that includes spf.brevo.com."""
    assert result(brevo, BREVO_IP) is SpfResult.PASS
    assert result(brevo, BREVO_IP_2) is SpfResult.PASS


def test_address_outside_the_include_gets_the_outer_all(brevo):
    """An address Brevo does not list falls through the include to acme.fr's ~all."""
    assert result(brevo, OUTSIDE) is SpfResult.SOFTFAIL


@pytest.mark.parametrize("all_term, expected", [
    ("-all", SpfResult.FAIL), ("~all", SpfResult.SOFTFAIL), ("?all", SpfResult.NEUTRAL),
    ("+all", SpfResult.PASS), ("all", SpfResult.PASS),
])
def test_all_with_each_qualifier(dns, all_term, expected):
    """`all` matches everything; its qualifier is the result (§4.6.2, §5.1)."""
    dns.spf("acme.fr", f"v=spf1 ip4:198.51.100.1 {all_term}")
    assert result(dns, CLIENT) is expected


def test_no_mechanism_matches_and_no_all_is_neutral(dns):
    """When nothing matches and there is no redirect, the result is neutral (§4.7)."""
    dns.spf("acme.fr", "v=spf1 ip4:198.51.100.1")
    assert result(dns, CLIENT) is SpfResult.NEUTRAL
    dns.spf("acme.fr", "v=spf1")
    assert result(dns, CLIENT) is SpfResult.NEUTRAL


def test_domain_without_any_txt_is_none(dns):
    """A domain that does not exist, or has no TXT records, has no SPF: none (§4.5)."""
    assert result(dns, CLIENT, "nowhere.fr") is SpfResult.NONE
    dns.add("acme.fr", "A", "192.0.2.1")
    assert result(dns, CLIENT) is SpfResult.NONE


def test_dns_failure_on_the_record_is_temperror(dns):
    """A DNS error fetching the record is temperror, with the failing query as the problem."""
    dns.temporary.add("acme.fr")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.TEMPERROR
    assert "acme.fr" in outcome.problem


def test_unknown_mechanism_is_permerror(dns):
    """An unknown mechanism is a syntax error: permerror naming the term (§4.6)."""
    dns.spf("acme.fr", "v=spf1 foo:bar.fr -all")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "foo:bar.fr" in outcome.problem


# --- qualifiers -----------------------------------------------------------------------

@pytest.mark.parametrize("qualifier, expected", [
    ("", SpfResult.PASS), ("+", SpfResult.PASS), ("-", SpfResult.FAIL),
    ("~", SpfResult.SOFTFAIL), ("?", SpfResult.NEUTRAL),
])
def test_qualifier_of_the_matching_mechanism_is_the_result(dns, qualifier, expected):
    """The first matching mechanism's qualifier decides; no qualifier means `+` (§4.6.2)."""
    dns.spf("acme.fr", f"v=spf1 {qualifier}ip4:{CLIENT} -all")
    assert result(dns, CLIENT) is expected


def test_first_match_wins(dns):
    """Mechanisms are evaluated left to right; later ones are not consulted after a match."""
    dns.spf("acme.fr", f"v=spf1 -ip4:{CLIENT} +ip4:192.0.2.0/24 +all")
    assert result(dns, CLIENT) is SpfResult.FAIL
    assert result(dns, "192.0.2.11") is SpfResult.PASS


# --- ip4 / ip6 ------------------------------------------------------------------------

@pytest.mark.parametrize("term, ip, expected", [
    ("ip4:192.0.2.10", "192.0.2.10", SpfResult.PASS),
    ("ip4:192.0.2.10", "192.0.2.11", SpfResult.FAIL),
    ("ip4:192.0.2.0/24", "192.0.2.200", SpfResult.PASS),
    ("ip4:192.0.2.0/24", "192.0.3.1", SpfResult.FAIL),
    ("ip4:1.179.112.0/20", "1.179.127.255", SpfResult.PASS),
    ("ip4:1.179.112.0/20", "1.179.128.0", SpfResult.FAIL),
    ("ip4:0.0.0.0/0", "203.0.113.7", SpfResult.PASS),
    ("ip6:2001:db8::10", "2001:db8::10", SpfResult.PASS),
    ("ip6:2001:db8::10", "2001:db8::11", SpfResult.FAIL),
    ("ip6:2001:db8::/32", "2001:db8:ffff::1", SpfResult.PASS),
    ("ip6:2001:db8::/32", "2001:db9::1", SpfResult.FAIL),
    ("ip4:192.0.2.0/24", "2001:db8::10", SpfResult.FAIL),     # other family never matches
    ("ip6:2001:db8::/32", "192.0.2.10", SpfResult.FAIL),
])
def test_ip_mechanisms_with_and_without_prefix(dns, term, ip, expected):
    """ip4/ip6 match the client address, alone or within a prefix, in their own family (§5.6)."""
    dns.spf("acme.fr", f"v=spf1 {term} -all")
    assert result(dns, ip) is expected


def test_ip_mechanisms_need_no_dns(dns):
    """ip4, ip6 and all query nothing beyond the record itself and count no lookup."""
    dns.spf("acme.fr", "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 -all")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.FAIL and outcome.lookups == 0
    assert dns.queries == [("acme.fr", "TXT")]


# --- a / mx ---------------------------------------------------------------------------

@pytest.mark.parametrize("term, ip, expected", [
    ("a", "192.0.2.10", SpfResult.PASS),                       # acme.fr's own A
    ("a", "192.0.2.11", SpfResult.FAIL),
    ("a/24", "192.0.2.200", SpfResult.PASS),
    ("a/24", "192.0.3.1", SpfResult.FAIL),
    ("a:mail.acme.fr", "198.51.100.5", SpfResult.PASS),
    ("a:mail.acme.fr", "192.0.2.10", SpfResult.FAIL),
    ("a:mail.acme.fr/24", "198.51.100.77", SpfResult.PASS),
    ("a", "2001:db8::10", SpfResult.PASS),                     # AAAA for an IPv6 client
    ("a//64", "2001:db8::ffff", SpfResult.PASS),
    ("a//64", "2001:db8:0:1::10", SpfResult.FAIL),
    ("a/24//64", "2001:db8::ffff", SpfResult.PASS),
])
def test_a_mechanism_with_domain_and_cidr(dns, term, ip, expected):
    """`a` compares the client with the A (or AAAA) records of the domain, within the prefix."""
    dns.add("acme.fr", "A", "192.0.2.10").add("acme.fr", "AAAA", "2001:db8::10")
    dns.add("mail.acme.fr", "A", "198.51.100.5")
    dns.spf("acme.fr", f"v=spf1 {term} -all")
    assert result(dns, ip) is expected


@pytest.mark.parametrize("term, ip, expected", [
    ("mx", "192.0.2.20", SpfResult.PASS),
    ("mx", "192.0.2.30", SpfResult.PASS),                      # the second MX host
    ("mx", "192.0.2.21", SpfResult.FAIL),
    ("mx/24", "192.0.2.99", SpfResult.PASS),
    ("mx:other.fr", "203.0.113.25", SpfResult.PASS),
    ("mx:other.fr", "192.0.2.20", SpfResult.FAIL),
    ("mx:other.fr/28", "203.0.113.30", SpfResult.PASS),
    ("mx", "2001:db8::20", SpfResult.PASS),
    ("mx//64", "2001:db8::abcd", SpfResult.PASS),
    ("mx//64", "2001:db8:1::20", SpfResult.FAIL),
])
def test_mx_mechanism_with_domain_and_cidr(dns, term, ip, expected):
    """`mx` compares the client with the addresses of each MX host, within the prefix (§5.4)."""
    dns.add("acme.fr", "MX", "10 mx1.acme.fr", "20 mx2.acme.fr")
    dns.add("mx1.acme.fr", "A", "192.0.2.20").add("mx1.acme.fr", "AAAA", "2001:db8::20")
    dns.add("mx2.acme.fr", "A", "192.0.2.30")
    dns.add("other.fr", "MX", "10 in.other.fr").add("in.other.fr", "A", "203.0.113.25")
    dns.spf("acme.fr", f"v=spf1 {term} -all")
    assert result(dns, ip) is expected


def test_mx_with_more_than_ten_hosts_is_permerror(dns):
    """More than 10 MX names to resolve for one `mx` is permerror (§4.6.4)."""
    dns.add("acme.fr", "MX", *(f"{i} mx{i}.acme.fr" for i in range(11)))
    dns.spf("acme.fr", "v=spf1 mx -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


def test_dns_failure_in_a_is_temperror(dns):
    """A DNS error while resolving an `a` target is temperror."""
    dns.spf("acme.fr", "v=spf1 a:mail.acme.fr -all")
    dns.temporary.add("mail.acme.fr")
    assert result(dns, CLIENT) is SpfResult.TEMPERROR


# --- include --------------------------------------------------------------------------

def test_include_chain_passes_through_several_levels(dns):
    """A pass deep in an include chain is a match at every level."""
    dns.spf("acme.fr", "v=spf1 include:_spf.acme.fr -all")
    dns.spf("_spf.acme.fr", "v=spf1 include:spf.brevo.com -all")
    dns.spf("spf.brevo.com", "v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all")
    outcome = check(dns, BREVO_IP)
    assert outcome.result is SpfResult.PASS
    assert outcome.lookups == 2
    assert result(dns, OUTSIDE) is SpfResult.FAIL


@pytest.mark.parametrize("inner_all", ["-all", "~all", "?all"])
def test_include_not_passing_is_no_match_and_evaluation_goes_on(dns, inner_all):
    """An included fail, softfail or neutral is not a match: the next term decides (§5.2)."""
    dns.spf("acme.fr", f"v=spf1 include:elsewhere.fr ip4:{CLIENT} -all")
    dns.spf("elsewhere.fr", f"v=spf1 ip4:198.51.100.1 {inner_all}")
    assert result(dns, CLIENT) is SpfResult.PASS
    assert result(dns, "203.0.113.1") is SpfResult.FAIL


def test_include_of_a_domain_without_spf_is_permerror(dns):
    """Including a domain that publishes no SPF record is permerror naming it (§5.2)."""
    dns.spf("acme.fr", "v=spf1 include:spf.gone.fr -all")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "spf.gone.fr" in outcome.problem


def test_include_temperror_propagates(dns):
    """A DNS error inside an include makes the whole evaluation temperror."""
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com -all")
    dns.temporary.add("spf.brevo.com")
    assert result(dns, BREVO_IP) is SpfResult.TEMPERROR


def test_include_permerror_propagates(dns):
    """A broken included record makes the whole evaluation permerror."""
    dns.spf("acme.fr", "v=spf1 include:spf.broken.fr -all")
    dns.spf("spf.broken.fr", "v=spf1 ip4:300.1.1.1 -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


def test_include_loop_is_permerror(dns):
    """A domain that includes itself, directly or through another, is permerror."""
    dns.spf("acme.fr", "v=spf1 include:loop.fr -all")
    dns.spf("loop.fr", "v=spf1 include:acme.fr -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR
    dns.spf("self.fr", "v=spf1 include:self.fr -all")
    assert result(dns, CLIENT, "self.fr") is SpfResult.PERMERROR


def test_same_include_twice_is_not_a_loop(dns):
    """Two branches including the same domain is fine (a diamond, not a loop)."""
    dns.spf("acme.fr", "v=spf1 include:a.acme.fr include:b.acme.fr -all")
    dns.spf("a.acme.fr", "v=spf1 include:common.fr ?all")
    dns.spf("b.acme.fr", f"v=spf1 include:common.fr ip4:{CLIENT} ?all")
    dns.spf("common.fr", "v=spf1 ip4:198.51.100.1 -all")
    assert result(dns, CLIENT) is SpfResult.PASS


# --- redirect -------------------------------------------------------------------------

def test_redirect_is_used_when_nothing_matches(dns):
    """Without `all`, redirect= hands the evaluation to the other domain's record (§6.1)."""
    dns.spf("acme.fr", "v=spf1 ip4:198.51.100.1 redirect=_spf.acme.fr")
    dns.spf("_spf.acme.fr", "v=spf1 include:spf.brevo.com -all")
    dns.spf("spf.brevo.com", "v=spf1 ip4:1.179.112.0/20 -all")
    assert result(dns, BREVO_IP) is SpfResult.PASS
    assert result(dns, CLIENT) is SpfResult.FAIL
    assert result(dns, "198.51.100.1") is SpfResult.PASS


def test_redirect_is_ignored_when_the_record_has_all(dns):
    """A record with `all` never follows its redirect, even when placed after it."""
    dns.spf("acme.fr", "v=spf1 redirect=_spf.acme.fr ?all")
    dns.spf("_spf.acme.fr", f"v=spf1 ip4:{CLIENT} -all")
    assert result(dns, CLIENT) is SpfResult.NEUTRAL
    assert ("_spf.acme.fr", "TXT") not in dns.queries


def test_redirect_to_a_domain_without_spf_is_permerror(dns):
    """Redirecting to a domain that has no SPF record is permerror, not none (§6.1)."""
    dns.spf("acme.fr", "v=spf1 redirect=nothing.acme.fr")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "nothing.acme.fr" in outcome.problem


def test_two_redirects_are_permerror(dns):
    """A modifier may appear once: two redirect= are a syntax error (§6)."""
    dns.spf("acme.fr", "v=spf1 redirect=a.fr redirect=b.fr")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


def test_unknown_modifiers_are_ignored(dns):
    """Unknown modifiers (and exp=) do not change the result (§6)."""
    dns.spf("acme.fr", f"v=spf1 foo=bar exp=explain.acme.fr ip4:{CLIENT} -all")
    assert result(dns, CLIENT) is SpfResult.PASS


# --- the record -----------------------------------------------------------------------

def test_two_spf_records_are_permerror_naming_it(dns):
    """A name with two `v=spf1` records is permerror, and the problem says so (§4.5)."""
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com -all", "v=spf1 ip4:192.0.2.0/24 -all")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "acme.fr" in outcome.problem and "2 SPF records" in outcome.problem


def test_non_spf_txt_records_are_ignored(dns):
    """Verification tokens, DKIM-looking text and the like beside the SPF record are ignored."""
    dns.spf("acme.fr", "google-site-verification=abc123", f"v=spf1 ip4:{CLIENT} -all",
            "MS=ms12345678", "v=DKIM1; p=")
    assert result(dns, CLIENT) is SpfResult.PASS


@pytest.mark.parametrize("text", ["v=spf10 +all", "v=spf1x +all", "spf1 +all", "v=spf2.0/pra +all"])
def test_lookalike_version_is_not_an_spf_record(dns, text):
    """Only `v=spf1` followed by a space or the end is a record: `v=spf10` is not one."""
    dns.spf("acme.fr", text)
    assert result(dns, CLIENT) is SpfResult.NONE


def test_a_lookalike_does_not_count_as_a_second_record(dns):
    """`v=spf10 ...` beside a real record is not a second record."""
    dns.spf("acme.fr", "v=spf10 -all", f"v=spf1 ip4:{CLIENT} -all")
    assert result(dns, CLIENT) is SpfResult.PASS


def test_ttl_is_the_smallest_seen(dns):
    """The outcome's TTL is the smallest TTL of every answer used, so callers can cache it."""
    dns.spf("acme.fr", "v=spf1 include:spf.brevo.com a:mail.acme.fr -all", ttl=3600)
    dns.spf("spf.brevo.com", "v=spf1 ip4:1.179.112.0/20 -all", ttl=900)
    dns.add("mail.acme.fr", "A", CLIENT, ttl=120)
    assert check(dns, CLIENT).ttl == 120
    assert check(dns, BREVO_IP).ttl == 900            # the A record was never needed


# --- syntax errors --------------------------------------------------------------------

@pytest.mark.parametrize("term", [
    "foo", "foo:bar.fr",                     # unknown mechanisms
    "ip4:192.0.2", "ip4:192.0.2.300", "ip4:192.0.2.0/33", "ip4:2001:db8::/32",  # bad networks
    "ip6:192.0.2.1", "ip6:2001:db8::/129", "ip4", "ip4:",
    "include", "include:", "exists", "allx", "all:acme.fr",
])
def test_bad_syntax_is_permerror(dns, term):
    """Malformed terms are permerror (§4.6)."""
    dns.spf("acme.fr", f"v=spf1 {term} -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


@pytest.mark.parametrize("bad", ["foo", "ip4:192.0.2.300", "mxfoo", "a:", "ptr/24"])
def test_syntax_error_after_a_match_is_still_permerror(dns, bad):
    """"If there are any syntax errors anywhere in the record, check_host() returns immediately
    with the result permerror, without further interpretation or evaluation" (§4.6): a
    malformed term after the matching one still makes the record permerror."""
    dns.spf("acme.fr", f"v=spf1 ip4:{CLIENT} {bad} -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


# --- limits ---------------------------------------------------------------------------

def _includes(dns: FakeDns, count: int) -> None:
    terms = " ".join(f"include:s{i}.acme.fr" for i in range(count))
    dns.spf("acme.fr", f"v=spf1 {terms} -all")
    for i in range(count):
        dns.spf(f"s{i}.acme.fr", "v=spf1 ip4:198.51.100.1 -all")


def test_ten_lookups_are_allowed(dns):
    """Exactly 10 DNS-querying terms are within the limit (§4.6.4)."""
    _includes(dns, MAX_LOOKUPS)
    outcome = check(dns, CLIENT)
    assert (outcome.result, outcome.lookups) == (SpfResult.FAIL, 10)


def test_eleven_includes_are_permerror(dns):
    """The 11th DNS-querying term is permerror, with the limit in the problem."""
    _includes(dns, MAX_LOOKUPS + 1)
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "10 DNS lookups" in outcome.problem
    assert ("s10.acme.fr", "TXT") not in dns.queries


def test_lookups_in_includes_and_every_querying_term_count_together(dns):
    """include, a, mx, exists and redirect, at any depth, share one budget of 10."""
    dns.spf("acme.fr", "v=spf1 a mx exists:x.acme.fr include:one.fr redirect=two.fr")
    dns.add("acme.fr", "A", "198.51.100.1").add("acme.fr", "MX", "10 mx.acme.fr")
    dns.add("mx.acme.fr", "A", "198.51.100.2").add("x.acme.fr", "TXT", "not an A")
    dns.spf("one.fr", "v=spf1 a:one.fr a:one.fr ?all").add("one.fr", "A", "198.51.100.3")
    dns.spf("two.fr", "v=spf1 a:one.fr a:one.fr include:one.fr -all")
    # a mx exists include:one.fr(a a) redirect(a a include:one.fr) = 10; then one.fr's a: 11
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "10 DNS lookups" in outcome.problem


def test_two_void_lookups_are_allowed_the_third_is_permerror(dns):
    """Lookups answering nothing (NXDOMAIN or no records) are limited to 2 (§4.6.4)."""
    dns.spf("acme.fr", "v=spf1 exists:v1.acme.fr a:v2.acme.fr -all")
    assert result(dns, CLIENT) is SpfResult.FAIL
    dns.spf("acme.fr", "v=spf1 exists:v1.acme.fr a:v2.acme.fr mx:v3.acme.fr -all")
    outcome = check(dns, CLIENT)
    assert outcome.result is SpfResult.PERMERROR
    assert "2 lookups returned nothing" in outcome.problem


# --- exists and macros ----------------------------------------------------------------

@pytest.mark.parametrize("spec, ip, sender, domain, expanded", [
    ("%{i}._ip.%{d}", "192.0.2.10", "alice@acme.fr", "acme.fr", "192.0.2.10._ip.acme.fr"),
    ("%{ir}._rev.%{d}", "192.0.2.10", "alice@acme.fr", "acme.fr", "10.2.0.192._rev.acme.fr"),
    ("%{l}._user.%{d}", "192.0.2.10", "Alice@acme.fr", "acme.fr", "alice._user.acme.fr"),
    ("%{o}._sender.%{d}", "192.0.2.10", "alice@news.acme.fr", "acme.fr",
     "news.acme.fr._sender.acme.fr"),
    ("%{d2}", "192.0.2.10", "alice@mail.eu.acme.fr", "mail.eu.acme.fr", "acme.fr"),
    ("%{ir}.%{v}._spf.%{d}", "192.0.2.10", "alice@acme.fr", "acme.fr",
     "10.2.0.192.in-addr._spf.acme.fr"),
    ("%{ir}.%{v}._spf.%{d}", "2001:db8::cb01", "alice@acme.fr", "acme.fr",
     "1.0.b.c." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6._spf.acme.fr"),
    ("%{l}.%{d}", "192.0.2.10", "@acme.fr", "acme.fr", "postmaster.acme.fr"),
    ("%{d1r}.x.%{d}", "192.0.2.10", "a@acme.fr", "acme.fr", "acme.x.acme.fr"),
    ("%{l-}.%{d}", "192.0.2.10", "first-last@acme.fr", "acme.fr", "first.last.acme.fr"),
])
def test_exists_expands_macros(dns, spec, ip, sender, domain, expanded):
    """exists: expands §7 macros and matches when the expanded name has an A record."""
    dns.spf(domain, f"v=spf1 exists:{spec} -all")
    dns.add(expanded, "A", "127.0.0.2")
    assert result(dns, ip, domain, sender) is SpfResult.PASS
    assert (expanded, "A") in dns.queries


def test_exists_without_an_a_record_does_not_match(dns):
    """exists: asks for an A record even for an IPv6 client, and a void answer is no match."""
    dns.spf("acme.fr", "v=spf1 exists:%{ir}.%{v}._spf.%{d} -all")
    assert result(dns, CLIENT6) is SpfResult.FAIL
    assert all(rdtype == "A" for name, rdtype in dns.queries if name.endswith("._spf.acme.fr"))


def test_macro_with_an_unknown_letter_is_permerror(dns):
    """`%{z}` is not a macro letter (§7.1): a syntax error, so permerror."""
    dns.spf("acme.fr", "v=spf1 exists:%{z}.acme.fr -all")
    dns.add("%{z}.acme.fr", "A", "127.0.0.2")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


def test_lone_percent_is_permerror(dns):
    """A `%` not followed by `{`, `%`, `_` or `-` is a syntax error (§7.1)."""
    dns.spf("acme.fr", "v=spf1 exists:100%.acme.fr -all")
    assert result(dns, CLIENT) is SpfResult.PERMERROR


# --- ptr ------------------------------------------------------------------------------

@pytest.fixture
def ptr_dns(dns) -> FakeDns:
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mail.acme.fr", "host.isp.example")
    dns.add("mail.acme.fr", "A", CLIENT)
    dns.add("host.isp.example", "A", CLIENT)
    return dns


def test_ptr_matches_a_validated_name_in_the_domain(ptr_dns):
    """ptr matches when a reverse name of the client, validated forward, is in the domain."""
    ptr_dns.spf("acme.fr", "v=spf1 ptr -all")
    assert result(ptr_dns, CLIENT) is SpfResult.PASS
    ptr_dns.spf("acme.fr", "v=spf1 ptr:isp.example -all")
    assert result(ptr_dns, CLIENT) is SpfResult.PASS


def test_ptr_name_in_another_domain_does_not_match(ptr_dns):
    """A reverse name outside the target domain is no match."""
    ptr_dns.spf("acme.fr", "v=spf1 ptr:other.fr -all")
    assert result(ptr_dns, CLIENT) is SpfResult.FAIL


def test_ptr_name_that_does_not_resolve_back_does_not_match(dns):
    """A reverse name whose A records do not include the client is not validated."""
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mail.acme.fr")
    dns.add("mail.acme.fr", "A", "198.51.100.1")
    dns.spf("acme.fr", "v=spf1 ptr -all")
    assert result(dns, CLIENT) is SpfResult.FAIL


def test_ptr_lookup_error_is_no_match(dns):
    """"If a DNS error occurs while doing the PTR RR lookup, then this mechanism fails to
    match" (§5.5): the next term decides, the result is not temperror."""
    dns.temporary.add("10.2.0.192.in-addr.arpa")
    dns.spf("acme.fr", "v=spf1 ptr -all")
    assert result(dns, CLIENT) is SpfResult.FAIL

"""relay.dns: the resolver against a real DNS server on loopback, and its TTL cache.

The server is tests.fakes.dns_server.LoopbackDns (dnslib, UDP and TCP on 127.0.0.1); time
is a fake clock, so cache expiry is tested without waiting.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from relay.dns import DnsResolver, DnsTemporaryError, parse_nameserver
from tests.fakes.dns_server import LoopbackDns
from tests.fakes.clock import FakeClock

LONG_SPF = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(40)) + " -all"


ZONE = {
    ("acme.fr", "TXT"): ["google-site-verification=abc", "v=spf1 include:spf.brevo.com ~all"],
    ("acme.fr", "MX"): ["10 mx1.acme.fr", "20 mx2.acme.fr"],
    ("long.acme.fr", "TXT"): [LONG_SPF],
    ("mx1.acme.fr", "A"): ["192.0.2.25"],
    ("mx1.acme.fr", "AAAA"): ["2001:db8::25"],
    ("25.2.0.192.in-addr.arpa", "PTR"): ["mx1.acme.fr"],
    ("slow.fr", "*"): LoopbackDns.TIMEOUT,
    ("broken.fr", "*"): LoopbackDns.SERVFAIL,
}


@pytest.fixture(scope="module")
def shared_server():
    with LoopbackDns({}) as dns:
        yield dns


@pytest.fixture
def server(shared_server) -> LoopbackDns:
    """The module's server with ZONE, a TTL of 300 s and no queries seen yet."""
    shared_server.zone.clear()
    shared_server.zone.update(ZONE)
    shared_server.ttl = 300
    shared_server.queries.clear()
    return shared_server


@pytest.fixture
def zone(server) -> dict:
    return server.zone


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def resolver(server: LoopbackDns, clock: FakeClock, timeout: float = 2.0, **kwargs) -> DnsResolver:
    return DnsResolver([server.nameserver], timeout, clock, **kwargs)


def run(coro):
    return asyncio.run(coro)


# --- answers --------------------------------------------------------------------------

def test_txt_records_are_returned_one_string_each(server, clock):
    """Each TXT record is one string; a record published as several strings (here a
    >255-character SPF record, sent as three) comes back joined without separators."""
    dns = resolver(server, clock)
    answer = run(dns.query("long.acme.fr", "TXT"))
    assert len(LONG_SPF) > 510
    assert answer.records == (LONG_SPF,)
    answer = run(dns.query("acme.fr", "TXT"))
    assert sorted(answer.records) == ["google-site-verification=abc",
                                      "v=spf1 include:spf.brevo.com ~all"]
    assert answer.ttl == 300 and not answer.void


def test_mx_records_are_preference_and_host(server, clock):
    """MX answers read "preference host", the host without its final dot."""
    answer = run(resolver(server, clock).query("acme.fr", "MX"))
    assert sorted(answer.records) == ["10 mx1.acme.fr", "20 mx2.acme.fr"]


def test_addresses_and_ptr(server, clock):
    """A and AAAA are addresses as text; PTR is the name without its final dot."""
    async def scenario(dns):
        return (await dns.query("mx1.acme.fr", "A"), await dns.query("mx1.acme.fr", "AAAA"),
                await dns.query("25.2.0.192.in-addr.arpa", "PTR"))
    a, aaaa, ptr = run(scenario(resolver(server, clock)))
    assert (a.records, aaaa.records, ptr.records) == (("192.0.2.25",), ("2001:db8::25",),
                                                      ("mx1.acme.fr",))


def test_nxdomain_is_a_void_answer(server, clock):
    """A name that does not exist is an empty answer marked nxdomain, not an error."""
    answer = run(resolver(server, clock).query("nowhere.acme.fr", "TXT"))
    assert answer.void and answer.nxdomain and answer.records == ()


def test_nodata_is_a_void_answer(server, clock):
    """A name that exists without records of the asked type is an empty answer (NODATA)."""
    answer = run(resolver(server, clock).query("mx1.acme.fr", "TXT"))
    assert answer.void and not answer.nxdomain


def test_name_never_answered_is_a_temporary_error_within_the_timeout(server, clock):
    """A query nobody answers raises DnsTemporaryError once `timeout` (0.5 s) has passed."""
    started = time.monotonic()
    with pytest.raises(DnsTemporaryError) as caught:
        run(resolver(server, clock, timeout=0.5).query("slow.fr", "TXT"))
    assert time.monotonic() - started < 2.0
    assert "slow.fr" in str(caught.value)
    assert ("slow.fr", "TXT") in server.queries


def test_servfail_is_a_temporary_error(server, clock):
    """SERVFAIL is "try again later", not an empty answer."""
    with pytest.raises(DnsTemporaryError):
        run(resolver(server, clock).query("broken.fr", "TXT"))


# --- cache ----------------------------------------------------------------------------

def asked(server: LoopbackDns, name: str, rdtype: str) -> int:
    return server.queries.count((name, rdtype))


def test_second_query_is_answered_from_the_cache(server, clock):
    """The same question within its TTL does not reach the server, whatever its case."""
    dns = resolver(server, clock)

    async def scenario():
        first = await dns.query("acme.fr", "MX")
        clock.t += 299
        return first, await dns.query("ACME.fr.", "MX")
    first, second = run(scenario())
    assert first == second
    assert asked(server, "acme.fr", "MX") == 1


def test_entry_expires_after_its_ttl(server, clock):
    """Once the TTL (300 s) has passed, the question goes to the server again."""
    dns = resolver(server, clock)

    async def scenario():
        await dns.query("acme.fr", "MX")
        clock.t += 301
        await dns.query("acme.fr", "MX")
    run(scenario())
    assert asked(server, "acme.fr", "MX") == 2


def test_negative_answers_are_cached(server, clock):
    """NXDOMAIN is cached like an answer."""
    dns = resolver(server, clock)

    async def scenario():
        await dns.query("nowhere.acme.fr", "TXT")
        await dns.query("nowhere.acme.fr", "TXT")
    run(scenario())
    assert asked(server, "nowhere.acme.fr", "TXT") == 1


def test_ttl_is_capped_at_max_ttl(server, clock):
    """A day-long TTL is kept at most `max_ttl` (here 600 s)."""
    server.ttl = 86400
    dns = resolver(server, clock, max_ttl=600)

    async def scenario():
        await dns.query("acme.fr", "MX")
        clock.t += 599
        await dns.query("acme.fr", "MX")
        clock.t += 2
        await dns.query("acme.fr", "MX")
    run(scenario())
    assert asked(server, "acme.fr", "MX") == 2


def test_cache_keeps_the_most_recently_used_entries(server, clock):
    """Beyond `cache_size` entries the least recently used one is dropped."""
    dns = resolver(server, clock, cache_size=2)

    async def scenario():
        for name in ("acme.fr", "mx1.acme.fr", "acme.fr", "long.acme.fr",   # evicts mx1
                     "acme.fr", "mx1.acme.fr"):
            await dns.query(name, "TXT")
    run(scenario())
    assert asked(server, "acme.fr", "TXT") == 1
    assert asked(server, "mx1.acme.fr", "TXT") == 2


def test_temporary_errors_are_not_cached(server, zone, clock):
    """After a failure the next query asks the server again (and may then succeed)."""
    dns = resolver(server, clock)

    async def scenario():
        with pytest.raises(DnsTemporaryError):
            await dns.query("broken.fr", "TXT")
        del zone[("broken.fr", "*")]
        zone[("broken.fr", "TXT")] = ["v=spf1 -all"]
        return await dns.query("broken.fr", "TXT")
    assert run(scenario()).records == ("v=spf1 -all",)


# --- nameserver specs -----------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[::1]", ("::1", 53)),
])
def test_parse_nameserver(spec, expected):
    """Nameservers are "host", "host:port", a bare IPv6 address or "[v6]:port"."""
    assert parse_nameserver(spec) == expected

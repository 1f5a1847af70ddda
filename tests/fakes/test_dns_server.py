"""The DNS fakes answer relay's real resolver as a zone file would: records of every supported
type, long TXT values in 255-character strings, NODATA vs NXDOMAIN, and failures on demand."""
from __future__ import annotations

import asyncio

import pytest

from relay.clock import SystemClock
from relay.dns import DnsResolver, DnsTemporaryError
from tests.fakes.dns_server import LoopbackDns, ZoneResolver

LONG = "v=DKIM1; k=rsa; p=" + "A" * 400

ZONE = {
    ("acme.fr", "TXT"): ["v=spf1 mx -all", LONG],
    ("acme.fr", "MX"): ["10 mx.acme.fr"],
    ("mx.acme.fr", "A"): ["192.0.2.25"],
    ("mx.acme.fr", "AAAA"): ["2001:db8::25"],
    ("25.2.0.192.in-addr.arpa", "PTR"): ["mx.acme.fr"],
    ("slow.example", "*"): LoopbackDns.TIMEOUT,
    ("broken.example", "TXT"): LoopbackDns.SERVFAIL,
}


async def ask_all(resolver) -> dict:
    out = {}
    for name, rdtype in [("ACME.fr.", "TXT"), ("acme.fr", "MX"), ("mx.acme.fr", "A"),
                         ("mx.acme.fr", "AAAA"), ("25.2.0.192.in-addr.arpa", "PTR"),
                         ("mx.acme.fr", "TXT"), ("nowhere.acme.fr", "A")]:
        answer = await resolver.query(name, rdtype)
        out[(name, rdtype)] = (sorted(answer.records), answer.nxdomain)
    for name, rdtype in [("slow.example", "A"), ("broken.example", "TXT")]:
        with pytest.raises(DnsTemporaryError):
            await resolver.query(name, rdtype)
    return out


EXPECTED = {
    ("ACME.fr.", "TXT"): (sorted(["v=spf1 mx -all", LONG]), False),
    ("acme.fr", "MX"): (["10 mx.acme.fr"], False),
    ("mx.acme.fr", "A"): (["192.0.2.25"], False),
    ("mx.acme.fr", "AAAA"): (["2001:db8::25"], False),
    ("25.2.0.192.in-addr.arpa", "PTR"): (["mx.acme.fr"], False),
    ("mx.acme.fr", "TXT"): ([], False),               # the name exists: NODATA
    ("nowhere.acme.fr", "A"): ([], True),             # NXDOMAIN
}


def test_loopback_server_answers_relays_resolver():
    """Over real UDP on 127.0.0.1, through relay.dns.DnsResolver."""
    with LoopbackDns(ZONE) as server:
        resolver = DnsResolver([server.nameserver], 0.5, SystemClock())
        assert asyncio.run(ask_all(resolver)) == EXPECTED
        assert ("slow.example", "A") in server.queries


def test_zone_resolver_answers_the_same():
    """The in-memory resolver gives the same answers from the same zone."""
    assert asyncio.run(ask_all(ZoneResolver(ZONE))) == EXPECTED

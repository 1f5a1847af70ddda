"""relay.watch.blocklists and relay.watch.watch: the questions asked of a DNS blocklist, what
its answers mean (a listing, an error answer that is never a listing, nothing), and what a
round of the watch says when a listing appears, stays, goes, or a zone refuses to answer.
DNS is `ZoneResolver` (the same zone dicts the loopback server serves)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from relay.config import parse
from relay.watch.blocklists import Kind, Status, look_up, question, read, zone
from relay.watch.watch import MAX_LINKED, BlocklistWatch, targets
from tests.fakes.clock import FakeClock
from tests.fakes.dns_server import SERVFAIL, ZoneResolver

ZEN = "zen.spamhaus.org"
DBL = "dbl.spamhaus.org"


def test_ipv4_question_reverses_the_octets():
    """RFC 5782 §2.1: 192.0.2.99 is asked as 99.2.0.192.<zone>."""
    assert question("192.0.2.99", ZEN) == "99.2.0.192.zen.spamhaus.org"
    assert question("127.0.0.2", ZEN) == "2.0.0.127.zen.spamhaus.org"


def test_ipv6_question_reverses_32_nibbles():
    """RFC 5782 §2.4: every nibble of the expanded address, last first."""
    name = question("2001:db8::1", ZEN)
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.zen.spamhaus.org"
    assert len(name.split(".")) == 32 + 3


def test_domain_question_is_the_domain():
    assert question("Acme.FR.", DBL) == "acme.fr.dbl.spamhaus.org"


@pytest.mark.parametrize("answers,status,meaning", [
    ((), Status.CLEAR, None),
    (("127.0.0.2",), Status.LISTED, "SBL"),
    (("127.0.0.4",), Status.LISTED, "XBL"),
    (("127.0.0.2", "127.255.255.254"), Status.LISTED, "SBL"),
    (("127.0.0.99",), Status.LISTED, "listed (127.0.0.99)"),
    (("127.255.255.252",), Status.REFUSED, "typing error"),
    (("127.255.255.254",), Status.REFUSED, "public or open resolver"),
    (("127.255.255.255",), Status.REFUSED, "too many queries"),
    (("198.51.100.7",), Status.REFUSED, "rewrites NXDOMAIN"),
])
def test_zen_answers(answers, status, meaning):
    """Spamhaus ZEN's codes; 127.255.255.252-255 are error answers, never a listing; an answer
    outside 127/8 is a resolver that rewrites NXDOMAIN, not a listing either."""
    found, meanings = read(zone(ZEN), answers)
    assert found is status
    if meaning:
        assert any(meaning in m for m in meanings), meanings


def test_dbl_error_for_an_ip_query_is_refused():
    """DBL answers 127.0.1.255 to an IP address asked of a domain list: refused, not listed."""
    assert read(zone(DBL), ("127.0.1.255",))[0] is Status.REFUSED
    assert read(zone(DBL), ("127.0.1.2",)) == (Status.LISTED, ("DBL: spam domain",))


@pytest.mark.parametrize("zone_name", ["multi.surbl.org", "multi.uribl.com"])
def test_bitmask_zones_read_bits_and_their_blocked_bit(zone_name):
    """SURBL and URIBL answer a bitmask: bit 1 means our queries are blocked (refused, even
    with other bits set); the other bits name the lists."""
    assert read(zone(zone_name), ("127.0.0.1",))[0] is Status.REFUSED
    assert read(zone(zone_name), ("127.0.0.9",))[0] is Status.REFUSED
    status, meanings = read(zone(zone_name), ("127.0.0.8",))
    assert status is Status.LISTED and len(meanings) == 1


def test_surbl_several_bits_several_meanings():
    status, meanings = read(zone("multi.surbl.org"), ("127.0.0.72",))      # 64 + 8
    assert status is Status.LISTED
    assert meanings == ("SURBL PH: phishing", "SURBL ABUSE: spam and abuse")


def test_dqs_zone_takes_its_public_zones_meanings():
    """`<key>.zen.dq.spamhaus.net` reads like zen.spamhaus.org."""
    dqs = zone("k3y.zen.dq.spamhaus.net")
    assert dqs.kind is Kind.IP and dqs.removal == zone(ZEN).removal
    assert read(dqs, ("127.0.0.3",))[1] == read(zone(ZEN), ("127.0.0.3",))[1]


def test_unknown_zone_lists_any_loopback_answer_but_the_error_codes():
    unknown = zone("bl.example.net")
    assert unknown.kind is None and unknown.removal == ""
    assert read(unknown, ("127.0.0.2",))[0] is Status.LISTED
    assert read(unknown, ("127.255.255.254",))[0] is Status.REFUSED


def test_look_up_reads_the_txt_reason_of_a_listing():
    resolver = ZoneResolver({
        ("2.0.0.127.zen.spamhaus.org", "A"): ["127.0.0.2"],
        ("2.0.0.127.zen.spamhaus.org", "TXT"): ["https://check.spamhaus.org/sbl/query/SBL2"],
    })
    verdict = asyncio.run(look_up(resolver, zone(ZEN), "127.0.0.2", Kind.IP))
    assert verdict.status is Status.LISTED
    assert verdict.reason == "https://check.spamhaus.org/sbl/query/SBL2"
    assert "removal: https://check.spamhaus.org/" in verdict.describe()
    clear = asyncio.run(look_up(resolver, zone(ZEN), "127.0.0.1", Kind.IP))
    assert clear.status is Status.CLEAR


def test_look_up_dns_failure_is_unanswered_not_clear():
    resolver = ZoneResolver({("2.0.0.127.zen.spamhaus.org", "*"): SERVFAIL})
    assert asyncio.run(look_up(resolver, zone(ZEN), "127.0.0.2", Kind.IP)).status is Status.UNANSWERED


# --- the watch ---------------------------------------------------------------------------

def config(tmp_path, **blocklists):
    text = f"""
server: {{listeners: [{{name: local, port: 0, tls: none}}]}}
domains: {{acme.fr: {{route: brevo}}, news.acme.fr: {{route: brevo}}}}
routes:
  brevo:
    outbox: {tmp_path}/outbox
    spf: {{egress_ips: [192.0.2.10, "2001:db8::10"], include: spf.brevo.com}}
  other: {{outbox: {tmp_path}/o2, spf: {{egress_ips: [192.0.2.10]}}}}
blocklists: {blocklists or {"ip_zones": [ZEN], "domain_zones": [DBL]}}
"""
    return parse(text, tmp_path, "test")


def test_targets_are_the_egress_ips_once_and_the_domains(tmp_path):
    watched = targets(config(tmp_path), ["linked.example"])
    assert watched == [(Kind.IP, "192.0.2.10"), (Kind.IP, "2001:db8::10"),
                       (Kind.DOMAIN, "acme.fr"), (Kind.DOMAIN, "news.acme.fr"),
                       (Kind.DOMAIN, "linked.example")]


def listed_zone() -> dict:
    v6 = question("2001:db8::10", ZEN)
    return {
        ("10.2.0.192.zen.spamhaus.org", "A"): ["127.0.0.2"],
        ("10.2.0.192.zen.spamhaus.org", "TXT"): ["Listed: see https://check.spamhaus.org/"],
        (v6, "A"): ["127.0.0.4"],
        ("news.acme.fr.dbl.spamhaus.org", "A"): ["127.0.1.2"],
    }


def events(caplog) -> list[tuple[str, dict]]:
    return [r.relay_event for r in caplog.records if hasattr(r, "relay_event")]


def test_a_round_counts_listings_and_says_each_once(tmp_path, caplog):
    """Listed IPv4 and IPv6 egress IPs and a listed domain: counted per (zone, kind), one
    blocklist_listed event each with the answer, reason and removal page; a second round
    with the same answers says nothing new; names never appear in the counts' keys."""
    caplog.set_level(logging.INFO)
    zone_dict = listed_zone()
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(zone_dict), FakeClock(1000.0))
    asyncio.run(watch.check())
    assert watch.listed == {(ZEN, "ip"): 2, (DBL, "domain"): 1}
    assert watch.checked == 1000.0
    listed = [fields for kind, fields in events(caplog) if kind == "blocklist_listed"]
    assert {f["name"] for f in listed} == {"192.0.2.10", "2001:db8::10", "news.acme.fr"}
    sbl = next(f for f in listed if f["name"] == "192.0.2.10")
    assert sbl["answer"] == "127.0.0.2" and sbl["reason"].startswith("Listed")
    assert sbl["removal"] == "https://check.spamhaus.org/" and "SBL" in sbl["meaning"]
    caplog.clear()
    asyncio.run(watch.check())
    assert not [e for e in events(caplog) if e[0].startswith("blocklist")]


def test_a_listing_that_goes_is_cleared(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    zone_dict = listed_zone()
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(zone_dict), FakeClock(1000.0))
    asyncio.run(watch.check())
    del zone_dict[("news.acme.fr.dbl.spamhaus.org", "A")]
    caplog.clear()
    asyncio.run(watch.check())
    assert watch.listed == {(ZEN, "ip"): 2}
    assert [f["name"] for k, f in events(caplog) if k == "blocklist_cleared"] == ["news.acme.fr"]


def test_a_dns_failure_keeps_the_last_verdict(tmp_path):
    """A timeout is no news: a listed name stays listed until the zone answers otherwise."""
    zone_dict = listed_zone()
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(zone_dict), FakeClock(1000.0))
    asyncio.run(watch.check())
    zone_dict[("10.2.0.192.zen.spamhaus.org", "*")] = SERVFAIL
    asyncio.run(watch.check())
    assert watch.listed[(ZEN, "ip")] == 2


def test_error_answers_are_a_refusal_said_once_never_a_listing(tmp_path, caplog):
    """A zone answering 127.255.255.254 for everything (queries through a public resolver):
    no listing counted, one blocklist_refused event, `refused` names the zone; when it
    answers again the refusal ends."""
    caplog.set_level(logging.INFO)
    refusing = {(question(ip, ZEN), "A"): ["127.255.255.254"]
                for ip in ("192.0.2.10", "2001:db8::10")}
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(refusing), FakeClock(1000.0))
    asyncio.run(watch.check())
    asyncio.run(watch.check())
    assert watch.listed == {}
    assert set(watch.refused) == {ZEN}
    refused = [f for k, f in events(caplog) if k == "blocklist_refused"]
    assert len(refused) == 1 and refused[0]["zone"] == ZEN
    assert "resolver" in refused[0]["why"]
    refusing.clear()
    asyncio.run(watch.check())
    assert watch.refused == {}


def test_only_zones_of_the_names_kind_are_asked(tmp_path):
    resolver = ZoneResolver({})
    asked = []
    original = resolver.query

    async def spy(name, rdtype):
        asked.append(name)
        return await original(name, rdtype)
    resolver.query = spy
    watch = BlocklistWatch(lambda: config(tmp_path), resolver, FakeClock(1000.0))
    asyncio.run(watch.check())
    assert sorted(asked) == sorted([question("192.0.2.10", ZEN), question("2001:db8::10", ZEN),
                                    "acme.fr.dbl.spamhaus.org", "news.acme.fr.dbl.spamhaus.org"])


def test_linked_domains_are_watched_for_a_day_by_organizational_domain(tmp_path):
    clock = FakeClock(1000.0)
    zone_dict = {("spammy.example.dbl.spamhaus.org", "A"): ["127.0.1.2"]}
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(zone_dict), clock)
    watch.saw_links(["click.spammy.example", "www.Spammy.Example."])
    assert list(watch.linked) == ["spammy.example"]
    asyncio.run(watch.check())
    assert watch.listed[(DBL, "domain")] == 1
    clock.advance(86400 + 1)
    asyncio.run(watch.check())
    assert (DBL, "domain") not in watch.listed and watch.linked == {}


def test_linked_domains_are_bounded(tmp_path):
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver({}), FakeClock(1000.0))
    watch.saw_links(f"d{i}.example" for i in range(MAX_LINKED + 50))
    assert len(watch.linked) == MAX_LINKED
    assert "d0.example" not in watch.linked and f"d{MAX_LINKED + 49}.example" in watch.linked


def test_a_refusal_keeps_the_last_real_answer(tmp_path):
    """A listed IP whose zone starts refusing our queries stays listed (the refusal says
    nothing about it), and no blocklist_cleared is said."""
    zone_dict = listed_zone()
    watch = BlocklistWatch(lambda: config(tmp_path), ZoneResolver(zone_dict), FakeClock(1000.0))
    asyncio.run(watch.check())
    zone_dict[("10.2.0.192.zen.spamhaus.org", "A")] = ["127.255.255.255"]
    asyncio.run(watch.check())
    assert watch.listed[(ZEN, "ip")] == 2 and set(watch.refused) == {ZEN}

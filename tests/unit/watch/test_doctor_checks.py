"""relay.watch.doctor_checks: `relay doctor`'s blocklist lines and what the stored DMARC
reports say, with the p=quarantine record once they show it safe. DNS is `ZoneResolver`."""
from __future__ import annotations

import asyncio

from relay import doctor
from relay.config import parse
from relay.doctor import Status
from relay.watch.aggregate import AggregateReport, AuthResult, Row
from relay.watch.blocklists import question
from relay.watch.dmarc_view import reports_of
from tests.fakes.dns_server import ZoneResolver

DAY = 86400
NOW = 20_000 * DAY + 10 * 3600
IP = "1.179.112.1"


def config(tmp_path):
    return parse(f"""
server: {{listeners: [{{name: local, port: 0, tls: none}}]}}
domains: {{acme.fr: {{route: brevo}}, news.acme.fr: {{route: brevo}}}}
routes:
  brevo: {{outbox: {tmp_path}/o, spf: {{egress_ips: [{IP}], include: spf.brevo.com}}}}
blocklists: {{ip_zones: [zen.spamhaus.org], domain_zones: [dbl.spamhaus.org]}}
""", tmp_path, "test")


def report(day: int, domain: str = "acme.fr", header_from: str = "acme.fr",
           dkim: str = "pass", ip: str = IP) -> AggregateReport:
    row = Row(ip, 100, "none", dkim, "fail", header_from,
              dkim_results=(AuthResult(header_from, dkim, "rly1"),))
    return AggregateReport("google.com", "", f"r{day}{domain}{ip}", day * DAY, day * DAY + DAY - 1,
                           domain, rows=(row,))


def examine(tmp_path, zone, reports=None, domain="acme.fr"):
    return asyncio.run(doctor.examine(config(tmp_path), domain, ZoneResolver(zone), reports, NOW))


def lines(result, area):
    return {c.name: (c.status, c.found) for c in result.checks if c.area == area}


DMARC_NONE = {("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=none; rua=mailto:dmarc@acme.fr"]}


def test_a_listing_is_wrong_and_names_the_removal_page(tmp_path):
    zone = {(question(IP, "zen.spamhaus.org"), "A"): ["127.0.0.2"],
            (question("acme.fr", "dbl.spamhaus.org"), "A"): ["127.255.255.254"]}
    found = lines(examine(tmp_path, zone), "Blocklists")
    status, text = found["zen.spamhaus.org"]
    assert status is Status.WRONG and "removal: https://check.spamhaus.org/" in text
    assert "tell the provider" in text
    assert found["dbl.spamhaus.org"][0] is Status.WARN and "refuses our queries" in found["dbl.spamhaus.org"][1]
    assert not examine(tmp_path, zone).ok


def test_nothing_listed_is_one_ok_line(tmp_path):
    found = lines(examine(tmp_path, {}), "Blocklists")
    assert found == {"zones": (Status.OK, f"acme.fr and route brevo's 1 egress IP(s): listed in none of 2 zone(s)")}


def test_fourteen_days_of_aligned_reports_offer_quarantine_in_test_mode(tmp_path):
    reports = [report(20_000 - d) for d in range(1, 16)]
    result = examine(tmp_path, DMARC_NONE, reports)
    found = lines(result, "DMARC")
    assert found["aggregate"][0] is Status.OK and found["aggregate"][1].startswith("15 report(s): 1500 of 1500")
    assert found["quarantine"][0] is Status.OK and "move to p=quarantine" in found["quarantine"][1]
    assert [(r.name, r.value) for r in result.records if r.name.startswith("_dmarc")] == [
        ("_dmarc.acme.fr", "v=DMARC1; p=quarantine; t=y; rua=mailto:dmarc@acme.fr")]


def test_a_failing_route_is_a_warning_and_no_quarantine_yet(tmp_path):
    reports = [report(20_000 - d, dkim="fail" if d == 3 else "pass") for d in range(1, 16)]
    result = examine(tmp_path, DMARC_NONE, reports)
    found = lines(result, "DMARC")
    assert found["aggregate"][0] is Status.WARN and "1 legitimate source(s) failing" in found["aggregate"][1]
    assert "stay at p=none" in found["quarantine"][1]
    assert not [r for r in result.records if r.name.startswith("_dmarc")]


def test_no_quarantine_line_once_the_policy_is_stricter(tmp_path):
    zone = {("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.fr"]}
    found = lines(examine(tmp_path, zone, [report(20_000 - d) for d in range(1, 16)]), "DMARC")
    assert "aggregate" in found and "quarantine" not in found


def test_no_reports_is_a_warning_naming_how_to_get_them(tmp_path):
    status, text = lines(examine(tmp_path, DMARC_NONE, []), "DMARC")["aggregate"]
    assert status is Status.WARN and "relay dmarc ingest" in text


def test_reports_unread_leave_the_line_out(tmp_path):
    """The state could not be read (None): the DNS checks still run, no report line."""
    assert "aggregate" not in lines(examine(tmp_path, DMARC_NONE, None), "DMARC")


def test_a_subdomain_takes_its_rows_of_the_organizational_domains_reports():
    mixed = AggregateReport("google.com", "", "x", 0, DAY, "acme.fr", rows=(
        Row(IP, 5, "none", "pass", "fail", "news.acme.fr"),
        Row(IP, 7, "none", "pass", "fail", "acme.fr")))
    own = report(1, domain="news.acme.fr", header_from="news.acme.fr")
    (from_parent, mine) = reports_of("news.acme.fr", [mixed, own])
    assert [r.count for r in from_parent.rows] == [5] and mine == own
    assert reports_of("acme.fr", [mixed]) == [mixed]

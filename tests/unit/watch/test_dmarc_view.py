"""relay.watch.dmarc_view: who sends as a domain according to its DMARC aggregate reports,
grouped into relay's routes, known providers (by reverse DNS) and unknown sources, with the
advice for each failing source, and when the domain may move to p=quarantine."""
from __future__ import annotations

import asyncio

from relay.config import parse
from relay.watch.aggregate import AggregateReport, AuthResult, Row
from relay.watch.dmarc_view import (advice, provider_of, quarantine_ready, reverse_names,
                                    sources)
from tests.fakes.dns_server import ZoneResolver

DAY = 86400
NOW = 20_000 * DAY + 10 * 3600


def config(tmp_path):
    return parse(f"""
server: {{listeners: [{{name: local, port: 0, tls: none}}]}}
domains: {{acme.fr: {{route: brevo}}}}
routes:
  brevo: {{outbox: {tmp_path}/o, spf: {{egress_ips: [1.179.112.1, 172.246.240.1]}}}}
""", tmp_path, "test")


def row(ip, count, dkim="pass", spf="fail", reasons=(), spf_domain="bounces.brevo.com"):
    return Row(ip, count, "none", dkim, spf, "acme.fr",
               dkim_results=(AuthResult("acme.fr", "pass" if dkim == "pass" else "fail", "rly1"),),
               spf_results=(AuthResult(spf_domain, "pass", scope="mfrom"),), reasons=tuple(reasons))


def report(day, *rows, org="google.com"):
    return AggregateReport(org, "noreply-dmarc-support@google.com", f"{org}-{day}",
                           day * DAY, day * DAY + DAY - 1, "acme.fr", rows=rows)


NAMES = {"209.85.220.41": "mail-sor-f41.google.com", "203.0.113.9": "",
         "1.179.112.1": "smtp-relay.brevo.com"}


def test_sources_are_grouped_summed_and_ordered(tmp_path):
    reports = [report(19_990, row("1.179.112.1", 100), row("209.85.220.41", 5, dkim="fail", spf="fail")),
               report(19_991, row("1.179.112.1", 50), row("203.0.113.9", 7, dkim="fail"))]
    found = sources(config(tmp_path), reports, NAMES)
    assert [(s.ip, s.group, s.label, s.messages, s.aligned) for s in found] == [
        ("1.179.112.1", "route", "brevo", 150, 150),
        ("209.85.220.41", "provider", "Google Workspace / Gmail", 5, 0),
        ("203.0.113.9", "unknown", "", 7, 0)]
    assert found[0].dkim_domains == {"acme.fr": "pass"}
    assert found[1].spf_domains == {"bounces.brevo.com": "pass"}


def test_provider_by_ptr_suffix_not_substring():
    assert provider_of("mail-sor-f41.google.com.") == "Google Workspace / Gmail"
    assert provider_of("mail.protection.outlook.com") == "Microsoft 365 / Outlook"
    assert provider_of("google.com.attacker.example") is None
    assert provider_of("notgoogle.com") is None
    assert provider_of("") is None


def test_advice_names_the_fix_for_each_group(tmp_path):
    reports = [report(19_990, row("1.179.112.1", 10, dkim="fail"),
                      row("209.85.220.41", 5, dkim="fail"), row("203.0.113.9", 7, dkim="fail"),
                      row("198.51.100.4", 3, dkim="fail", reasons=["forwarded"]))]
    by_ip = {s.ip: s for s in sources(config(tmp_path), reports, NAMES)}
    assert "tracking" in advice(by_ip["1.179.112.1"]) and "relay doctor" in advice(by_ip["1.179.112.1"])
    google = advice(by_ip["209.85.220.41"])
    assert google.startswith("Google Workspace / Gmail sends as your domain and passes SPF")
    assert "DKIM" in google and "Google Admin" in google
    assert "spoofing" in advice(by_ip["203.0.113.9"])
    assert "forwarded" in advice(by_ip["198.51.100.4"])


def test_an_aligned_source_needs_no_advice(tmp_path):
    (only,) = sources(config(tmp_path), [report(19_990, row("1.179.112.1", 10))], NAMES)
    assert advice(only) == ""


def test_quarantine_ready_after_14_days_of_aligned_legitimate_sources(tmp_path):
    """Every route and provider source aligned for 14 days of reports: ready, though an
    unknown source fails (that is what quarantine is for)."""
    reports = [report(20_000 - d, row("1.179.112.1", 100), row("203.0.113.9", 3, dkim="fail"))
               for d in range(1, 15)]
    ready = quarantine_ready(sources(config(tmp_path), reports, NAMES), reports, NOW)
    assert ready.ready, ready.why


def test_not_ready_with_too_few_days(tmp_path):
    reports = [report(20_000 - d, row("1.179.112.1", 100)) for d in range(1, 6)]
    ready = quarantine_ready(sources(config(tmp_path), reports, NAMES), reports, NOW)
    assert not ready.ready and "wait for 14" in ready.why


def test_not_ready_while_a_known_provider_fails(tmp_path):
    reports = [report(20_000 - d, row("1.179.112.1", 100), row("209.85.220.41", 2, dkim="fail"))
               for d in range(1, 15)]
    ready = quarantine_ready(sources(config(tmp_path), reports, NAMES), reports, NOW)
    assert not ready.ready and "209.85.220.41" in ready.why


def test_forwarded_failures_do_not_hold_quarantine_back(tmp_path):
    reports = [report(20_000 - d, row("1.179.112.1", 100),
                      row("1.179.112.1", 2, dkim="fail", reasons=["forwarded"]))
               for d in range(1, 15)]
    ready = quarantine_ready(sources(config(tmp_path), reports, NAMES), reports, NOW)
    assert ready.ready, ready.why


def test_not_ready_without_reports(tmp_path):
    assert not quarantine_ready([], [], NOW).ready


def test_reverse_names_from_ptr_records():
    resolver = ZoneResolver({("41.220.85.209.in-addr.arpa", "PTR"): ["mail-sor-f41.google.com"]})
    names = asyncio.run(reverse_names(resolver, ["209.85.220.41", "203.0.113.9", "2001:db8::25"]))
    assert names == {"209.85.220.41": "mail-sor-f41.google.com", "203.0.113.9": "",
                     "2001:db8::25": ""}

"""relay.doctor: a domain's SPF, DKIM and DMARC as published (an in-memory zone), against the
configuration; the records to publish; the table, the JSON object and the exit code."""
from __future__ import annotations

import asyncio
import io
import json

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519

from relay import config as config_module
from relay import doctor
from relay.doctor import Status, merge_spf
from relay.errors import ConfigError
from relay.signing import dkim
from tests.fakes.dns_server import ZoneResolver

BREVO_SPF = "v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all"


@pytest.fixture(scope="module")
def keys(dkim_keys) -> dict[str, str]:
    """The public key records of acme.fr's two configured keys."""
    return {sel: dkim.public_record(dkim.load_key("acme.fr", sel, path))
            for sel, path in dkim_keys.items()}


@pytest.fixture
def config(tmp_path, dkim_keys):
    def make(spf: dict | None = None, dkim_: list | None = None):
        route = {"outbox": str(tmp_path / "outbox")}
        if spf is not False:
            route["spf"] = spf or {"egress_ips": ["1.179.112.1", "172.246.240.1"],
                                   "include": "spf.brevo.com"}
        data = {"server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
                "domains": {"acme.fr": {"route": "brevo", "dkim": dkim_ if dkim_ is not None else [
                    {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])},
                    {"selector": "ed1", "private_key": str(dkim_keys["ed1"]),
                     "algorithm": "ed25519-sha256"}]}},
                "routes": {"brevo": route}}
        return config_module.parse(yaml.safe_dump(data), tmp_path)
    return make


@pytest.fixture
def good_zone(keys) -> dict:
    return {
        ("acme.fr", "TXT"): ["google-site-verification=abc", "v=spf1 mx include:spf.brevo.com ~all"],
        ("acme.fr", "MX"): ["10 mx.acme.fr"],
        ("mx.acme.fr", "A"): ["192.0.2.25"],
        ("spf.brevo.com", "TXT"): [BREVO_SPF],
        ("rsa1._domainkey.acme.fr", "TXT"): [keys["rsa1"]],
        ("ed1._domainkey.acme.fr", "TXT"): [keys["ed1"]],
        ("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.fr"],
    }


def examine(config, zone) -> tuple[int, doctor.Report, str]:
    """-> (exit code and output of `relay doctor acme.fr`, the report)."""
    out = io.StringIO()
    code = doctor.run(config, "acme.fr", ZoneResolver(zone), out=out)
    report = asyncio.run(doctor.examine(config, "acme.fr", ZoneResolver(zone)))
    assert doctor.render(report) == out.getvalue()
    return code, report, out.getvalue()


def statuses(report) -> dict[str, Status]:
    return {f"{c.area} {c.name}": c.status for c in report.checks}


def test_correct_domain_passes(config, good_zone):
    """Everything published as the configuration needs: all OK, nothing to publish, exit 0."""
    code, report, text = examine(config(), good_zone)
    assert code == 0 and report.ok and report.records == []
    assert statuses(report) == {
        "SPF record": Status.OK, "SPF lookups": Status.OK, "SPF route brevo": Status.OK,
        "DKIM selector rsa1": Status.OK, "DKIM selector ed1": Status.OK,
        "DMARC policy": Status.OK, "DMARC reports": Status.OK, "DMARC alignment": Status.OK,
        "Blocklists zones": Status.OK}
    assert "2 of 10 DNS lookups" in text
    assert "RSA 2048 bits" in text and "Ed25519" in text
    assert "Records to publish" not in text and "acme.fr: ready to send through relay" in text


def test_broken_domain_gets_the_records_to_publish(config, good_zone, keys):
    """SPF without the route's include, the RSA key unpublished, another Ed25519 key
    published, no DMARC: each is reported with the record that fixes it; exit 1."""
    other_ed = dkim.public_record(dkim.SigningKey(
        "acme.fr", "ed1", dkim.ED25519_SHA256, ed25519.Ed25519PrivateKey.generate()))
    zone = good_zone | {("acme.fr", "TXT"): ["v=spf1 mx -all"],
                        ("ed1._domainkey.acme.fr", "TXT"): [other_ed]}
    del zone[("rsa1._domainkey.acme.fr", "TXT")], zone[("_dmarc.acme.fr", "TXT")]
    code, report, text = examine(config(), zone)
    assert code == 1 and not report.ok
    found = statuses(report)
    assert found["SPF route brevo"] is Status.WRONG
    assert found["DKIM selector rsa1"] is Status.MISSING
    assert found["DKIM selector ed1"] is Status.WRONG
    assert found["DMARC policy"] is Status.MISSING
    assert "1.179.112.1: fail; add include:spf.brevo.com to the SPF record of acme.fr" in text

    records = {r.name: r for r in report.records}
    assert records["acme.fr"].value == "v=spf1 mx include:spf.brevo.com -all"     # merged
    rsa = records["rsa1._domainkey.acme.fr"]
    assert rsa.type == "TXT" and rsa.value == keys["rsa1"]
    assert len(rsa.strings) == 2 and all(len(s) <= 255 for s in rsa.strings)
    assert "".join(rsa.strings) == keys["rsa1"]
    assert records["ed1._domainkey.acme.fr"].value == keys["ed1"]
    assert records["_dmarc.acme.fr"].value == "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.fr"

    assert "Records to publish:" in text
    assert 'acme.fr. IN TXT "v=spf1 mx include:spf.brevo.com -all"' in text
    assert f'rsa1._domainkey.acme.fr. IN TXT "{rsa.strings[0]}" "{rsa.strings[1]}"' in text
    assert "is not the configured one (Ed25519)" in text


def test_no_spf_record_gets_a_new_one(config, good_zone):
    """No v=spf1 record at all: MISSING, and a new record with the include and ~all."""
    code, report, _ = examine(config(), good_zone | {("acme.fr", "TXT"): ["other=1"]})
    assert code == 1 and statuses(report)["SPF record"] is Status.MISSING
    assert [r.value for r in report.records] == ["v=spf1 include:spf.brevo.com ~all"]


def test_two_spf_records_are_merged_into_one(config, good_zone):
    """Two v=spf1 records (a permerror for receivers): one merged record replaces them."""
    zone = good_zone | {("acme.fr", "TXT"): ["v=spf1 mx -all", "v=spf1 ip4:192.0.2.0/24 ~all"]}
    code, report, _ = examine(config(), zone)
    assert code == 1 and statuses(report)["SPF record"] is Status.WRONG
    assert [r.value for r in report.records] == [
        "v=spf1 mx ip4:192.0.2.0/24 include:spf.brevo.com -all"]


def test_include_found_through_a_nested_include(config, good_zone):
    """The include is reached through another include but the IP still fails: WRONG, and
    no record to publish (adding the include again would change nothing)."""
    zone = good_zone | {("acme.fr", "TXT"): ["v=spf1 include:_spf.acme.fr -all"],
                        ("_spf.acme.fr", "TXT"): ["v=spf1 -ip4:1.179.112.1 include:spf.brevo.com"]}
    code, report, text = examine(config(), zone)
    assert code == 1 and report.records == []
    assert "although include:spf.brevo.com is there" in text


def test_route_without_include_suggests_its_addresses(config, good_zone):
    """A route whose spf names no include: the egress addresses themselves are suggested."""
    zone = good_zone | {("acme.fr", "TXT"): ["v=spf1 redirect=_spf.acme.fr"],
                        ("_spf.acme.fr", "TXT"): ["v=spf1 mx -all"]}
    code, report, _ = examine(config({"egress_ips": ["192.0.2.7", "2001:db8::7"]}), zone)
    assert code == 1
    assert [r.value for r in report.records] == [
        "v=spf1 ip4:192.0.2.7 ip6:2001:db8::7 redirect=_spf.acme.fr"]


def test_lookup_count(config, good_zone):
    """9 or 10 DNS-querying terms: WARN; more: WRONG, the record is a permerror."""
    names = [f"i{n}.acme.fr" for n in range(11)]
    zone = good_zone | {(n, "TXT"): ["v=spf1 -ip4:192.0.2.99"] for n in names}
    record = "v=spf1 " + " ".join(f"include:{n}" for n in names[:8]) + " include:spf.brevo.com ~all"
    code, report, text = examine(config(), zone | {("acme.fr", "TXT"): [record]})
    assert statuses(report)["SPF lookups"] is Status.WARN and "9 of 10" in text
    assert code == 0
    record = "v=spf1 " + " ".join(f"include:{n}" for n in names) + " include:spf.brevo.com ~all"
    code, report, text = examine(config(), zone | {("acme.fr", "TXT"): [record]})
    assert statuses(report)["SPF lookups"] is Status.WRONG and "more than 10 DNS lookups" in text
    assert code == 1


def test_dmarc_strict_without_reports(config, good_zone):
    """A policy without rua: a WARN about reports, still exit 0; strict alignment with the
    domain's own key aligns."""
    zone = good_zone | {("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=reject; adkim=s"]}
    code, report, text = examine(config(), zone)
    assert code == 0
    assert statuses(report)["DMARC reports"] is Status.WARN
    assert "DKIM d=acme.fr aligns with From acme.fr (strict)" in text


def test_dkim_revoked_and_weak_keys(config, good_zone, tmp_path):
    """An empty p= is a revoked key (WRONG); an RSA-1024 key published is a WARN."""
    weak = tmp_path / "weak.pem"
    weak.write_bytes(dkim.generate_key(dkim.RSA_SHA256, 1024))
    cfg = config(dkim_=[{"selector": "old", "private_key": str(weak)}])
    weak_record = dkim.public_record(dkim.load_key("acme.fr", "old", weak))
    code, report, text = examine(cfg, good_zone | {("old._domainkey.acme.fr", "TXT"): [weak_record]})
    assert statuses(report)["DKIM selector old"] is Status.WARN and "RSA 1024 bits" in text
    assert code == 0
    code, report, text = examine(cfg, good_zone | {("old._domainkey.acme.fr", "TXT"): ["v=DKIM1; p="]})
    assert statuses(report)["DKIM selector old"] is Status.WRONG and "revoked" in text
    assert code == 1


def test_domain_without_keys_or_spf_policy(config, good_zone):
    """No DKIM key configured: MISSING, and DMARC cannot align; a route without spf has no
    route check."""
    code, report, _ = examine(config(spf=False, dkim_=[]), good_zone)
    found = statuses(report)
    assert code == 1 and "SPF route brevo" not in found
    assert found["DKIM keys"] is Status.MISSING and found["DMARC alignment"] is Status.WRONG


def test_dns_temporary_errors_are_results(config, good_zone):
    """Timeouts are reported as ERROR lines, never raised; exit 1."""
    zone = good_zone | {("spf.brevo.com", "TXT"): ZoneResolver.TIMEOUT,
                        ("_dmarc.acme.fr", "TXT"): ZoneResolver.SERVFAIL}
    code, report, text = examine(config(), zone)
    assert code == 1
    found = statuses(report)
    assert found["SPF route brevo"] is Status.ERROR and found["DMARC DNS"] is Status.ERROR
    assert "temperror" in text and "DNS temporary error" in text


def test_unknown_domain_is_a_config_error(config):
    """A domain not under domains: is refused with the configured ones named."""
    with pytest.raises(ConfigError, match="other.fr is not one of the configured domains"):
        doctor.run(config(), "other.fr", ZoneResolver({}))


def test_json_shape(config, good_zone):
    """--json: one object with domain, route, ok, checks[] and records[] (with strings)."""
    out = io.StringIO()
    zone = dict(good_zone)
    del zone[("rsa1._domainkey.acme.fr", "TXT")]
    assert doctor.run(config(), "ACME.fr.", ZoneResolver(zone), as_json=True, out=out) == 1
    data = json.loads(out.getvalue())
    assert set(data) == {"domain", "route", "ok", "checks", "records"}
    assert (data["domain"], data["route"], data["ok"]) == ("acme.fr", "brevo", False)
    assert data["checks"][0] == {"area": "SPF", "check": "record", "status": "OK",
                                 "found": "v=spf1 mx include:spf.brevo.com ~all"}
    [record] = data["records"]
    assert set(record) == {"name", "type", "value", "strings", "reason"}
    assert record["name"] == "rsa1._domainkey.acme.fr" and "".join(record["strings"]) == record["value"]


@pytest.mark.parametrize("records, additions, merged", [
    (["v=spf1 mx -all"], ["include:x.com"], "v=spf1 mx include:x.com -all"),
    (["v=spf1 mx ?all exp=e.acme.fr"], ["include:x.com"], "v=spf1 mx include:x.com ?all exp=e.acme.fr"),
    (["v=spf1 a redirect=_spf.acme.fr"], ["include:x.com"], "v=spf1 a include:x.com redirect=_spf.acme.fr"),
    (["v=spf1 mx"], ["include:x.com"], "v=spf1 mx include:x.com"),
    (["v=spf1 include:X.com ~all"], ["include:x.com"], "v=spf1 include:X.com ~all"),
    (["v=spf1 mx -all", "v=spf1 mx a ~all"], [], "v=spf1 mx a -all"),
])
def test_merge_spf(records, additions, merged):
    """Additions go before the final all/redirect term, once; other records' terms too."""
    assert merge_spf(records, additions) == merged

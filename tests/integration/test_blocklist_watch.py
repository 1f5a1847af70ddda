"""The blocklist watch against a real DNS server on loopback.

The route's IPv4 and IPv6 egress IPs are listed in zen.spamhaus.org, the sender domain in
dbl.spamhaus.org, and a third zone answers every query with Spamhaus's "public resolver"
error code. At start relay looks them all up: /metrics counts the listings per zone and
kind (never a name in a label), says which zone refuses our queries, and when it checked;
each listing is an event with the zone's answer, its TXT reason and the removal page; the
refusing zone is never counted as a listing. Bulk mail linking to a listed domain puts that
domain in the next round. `relay doctor acme.fr` asks the same server and names each listing
with its removal page, and exits 1.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml

from relay.watch.blocklists import question
from tests.conftest import base_config, submit, wait_until
from tests.fakes.dns_server import LoopbackDns

ZEN, DBL, REFUSING = "zen.spamhaus.org", "dbl.spamhaus.org", "bl.refusing.test"
IPS = ["192.0.2.10", "2001:db8::10"]
LINKED = "spammy-offers.example"


@pytest.fixture
def dns():
    zone = {
        (question(IPS[0], ZEN), "A"): ["127.0.0.2"],
        (question(IPS[0], ZEN), "TXT"): ["https://check.spamhaus.org/sbl/query/SBL12345"],
        (question(IPS[1], ZEN), "A"): ["127.0.0.3"],
        (question("acme.fr", DBL), "A"): ["127.0.1.2"],
        (question(LINKED, DBL), "A"): ["127.0.1.4"],
        **{(question(ip, REFUSING), "A"): ["127.255.255.254"] for ip in IPS},
    }
    with LoopbackDns(zone) as server:
        yield server


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^(relay_blocklist_\S+|relay_dmarc_\S+) (\S+)$", text, re.M)}


def test_listings_are_metrics_events_and_doctor_lines(make_relay, dns, tmp_path, caplog,
                                                      upstream, server_cert, dkim_keys):
    caplog.set_level("INFO")
    overrides = {
        "dns": {"nameservers": [dns.nameserver], "timeout": "2s"},
        "metrics": {"address": "127.0.0.1", "port": 0},
        "routes.provider.spf": {"mode": "off", "egress_ips": IPS},
        "blocklists": {"ip_zones": [ZEN, REFUSING], "domain_zones": [DBL]},
        "limits": {"bulk": {"recipients_threshold": 1}},
    }
    relay = make_relay(**overrides)
    port = relay.relay.metrics_port
    wait_until(lambda: scrape(port).get("relay_blocklist_last_check_timestamp_seconds", 0) > 0,
               what="the first blocklist round")
    seen = scrape(port)
    assert seen[f'relay_blocklist_listed{{kind="ip",zone="{ZEN}"}}'] == 2
    assert seen[f'relay_blocklist_listed{{kind="domain",zone="{DBL}"}}'] == 1
    assert seen[f'relay_blocklist_listed{{kind="ip",zone="{REFUSING}"}}'] == 0
    assert seen[f'relay_blocklist_refused{{zone="{REFUSING}"}}'] == 1
    assert seen[f'relay_blocklist_refused{{zone="{ZEN}"}}'] == 0
    assert not any("acme.fr" in name or "192.0.2" in name for name in seen if "blocklist" in name)

    listed = [r.relay_event[1] for r in caplog.records
              if getattr(r, "relay_event", ("",))[0] == "blocklist_listed"]
    assert {e["name"] for e in listed} == {*IPS, "acme.fr"}
    sbl = next(e for e in listed if e["name"] == IPS[0])
    assert sbl["reason"] == "https://check.spamhaus.org/sbl/query/SBL12345"
    assert sbl["removal"] == "https://check.spamhaus.org/" and sbl["answer"] == "127.0.0.2"

    # bulk mail linking to a listed domain: that domain joins the next round
    bulk = ("From: news@acme.fr\r\nTo: a@example.net\r\nSubject: Offers\r\n"
            "List-Unsubscribe: <https://acme.fr/u/1>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "Content-Type: text/html\r\n\r\n"
            f'<p>See <a href="https://www.{LINKED}/deal">the deal</a>. '
            '<a href="https://acme.fr/u/1">Unsubscribe</a></p>\r\n')
    assert submit(relay.port("local"), "news@acme.fr", ["a@example.net", "b@example.net"], bulk) == {}
    wait_until(lambda: LINKED in relay.relay.blocklists.linked, what="the linked domain noted")
    relay.call(relay.relay.blocklists.check())
    assert scrape(port)[f'relay_blocklist_listed{{kind="domain",zone="{DBL}"}}'] == 2

    config_file = tmp_path / "doctor.yaml"
    config_file.write_text(yaml.safe_dump(
        base_config(tmp_path, upstream.port, server_cert, dkim_keys, **overrides)))
    done = subprocess.run([sys.executable, "-m", "relay.cli", "doctor", "acme.fr", "--json",
                           "-c", str(config_file)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 1, done.stderr
    checks = [c for c in json.loads(done.stdout)["checks"] if c["area"] == "Blocklists"]
    wrong = [c["found"] for c in checks if c["status"] == "WRONG"]
    assert len(wrong) == 3
    assert any(IPS[1] in line and ZEN in line and "removal: https://check.spamhaus.org/" in line
               for line in wrong)
    assert any("acme.fr is listed in dbl.spamhaus.org: DBL: spam domain" in line for line in wrong)
    assert [c["status"] for c in checks if c["check"] == REFUSING] == ["WARN"]

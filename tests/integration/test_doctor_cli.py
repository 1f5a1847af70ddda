"""`relay doctor DOMAIN -c relay.yaml` against a real DNS server on loopback.

The domain owner's view: with SPF including the route's provider, the DKIM key published and
a DMARC policy, doctor says so and exits 0. With the include missing, the key unpublished
and no DMARC record, it prints one line per problem and the records to publish (the SPF
record merged, the DKIM key split into 255-character strings) and exits 1. A DNS server
that does not answer is reported as a temporary error, exit 1, no traceback. Every query
goes to the loopback server named in `dns.nameservers`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from relay.signing import dkim
from tests.fakes.dns_server import LoopbackDns

BREVO_SPF = "v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all"


@pytest.fixture
def setup(tmp_path):
    """A relay.yaml naming the loopback DNS server, acme.fr's key, and the published zone."""
    key_path = tmp_path / "acme.fr.rly1.pem"
    key_path.write_bytes(dkim.generate_key())
    public = dkim.public_record(dkim.load_key("acme.fr", "rly1", key_path))
    zone = {
        ("acme.fr", "TXT"): ["v=spf1 mx include:spf.brevo.com ~all"],
        ("acme.fr", "MX"): ["10 mx.acme.fr"],
        ("mx.acme.fr", "A"): ["192.0.2.25"],
        ("spf.brevo.com", "TXT"): [BREVO_SPF],
        ("rly1._domainkey.acme.fr", "TXT"): [public],        # > 255 chars: served as 2 strings
        ("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=none; rua=mailto:dmarc@acme.fr"],
    }
    server = LoopbackDns(zone).start()
    config = {
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "dns": {"nameservers": [server.nameserver], "timeout": "1s"},
        "domains": {"acme.fr": {"route": "brevo",
                                "dkim": [{"selector": "rly1", "private_key": str(key_path)}]}},
        "routes": {"brevo": {"outbox": str(tmp_path / "outbox"),
                             "spf": {"mode": "enforce", "egress_ips": ["1.179.112.1", "172.246.240.1"],
                                     "include": "spf.brevo.com"}}},
    }
    config_file = tmp_path / "relay.yaml"
    config_file.write_text(yaml.safe_dump(config))
    yield config_file, zone, server, public
    server.stop()


def doctor(config_file, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", "doctor", *args, "-c", str(config_file)],
                          capture_output=True, text=True, timeout=60, cwd=config_file.parent,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_correct_domain_exits_0(setup):
    """Everything published: one OK line per check, nothing to publish, exit 0."""
    config_file, _, server, _ = setup
    result = doctor(config_file, "acme.fr")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("SPF record", "SPF lookups", "SPF route brevo", "DKIM selector rly1",
                  "DMARC policy", "DMARC reports", "DMARC alignment"):
        words = check.split() + ["OK"]
        assert any(line.split()[:len(words)] == words for line in lines), (check, lines)
    assert "Records to publish" not in result.stdout
    assert ("_dmarc.acme.fr", "TXT") in server.queries
    assert ("rly1._domainkey.acme.fr", "TXT") in server.queries


def test_broken_domain_prints_the_records_and_exits_1(setup):
    """Include missing, key unpublished, no DMARC: WRONG/MISSING lines, then the merged SPF
    record, the key in 255-character strings and a p=none DMARC record; exit 1."""
    config_file, zone, _, public = setup
    zone[("acme.fr", "TXT")] = ["v=spf1 mx -all"]
    del zone[("rly1._domainkey.acme.fr", "TXT")], zone[("_dmarc.acme.fr", "TXT")]
    result = doctor(config_file, "acme.fr")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "SPF route brevo" in out and "WRONG" in out
    assert "add include:spf.brevo.com to the SPF record of acme.fr" in out
    assert "DKIM selector rly1" in out and "MISSING" in out
    publish = out.split("Records to publish:")[1]
    assert 'acme.fr. IN TXT "v=spf1 mx include:spf.brevo.com -all"' in publish
    strings = dkim.txt_strings(public)
    assert len(strings) > 1
    assert "rly1._domainkey.acme.fr. IN TXT " + " ".join(f'"{s}"' for s in strings) in publish
    assert '_dmarc.acme.fr. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.fr"' in publish

    data = json.loads(doctor(config_file, "acme.fr", "--json").stdout)
    assert data["ok"] is False
    assert {r["name"] for r in data["records"]} == {"acme.fr", "rly1._domainkey.acme.fr",
                                                   "_dmarc.acme.fr"}


def test_dns_timeout_is_a_temporary_error(setup):
    """A name the server never answers: ERROR lines saying so, exit 1, no traceback."""
    config_file, zone, _, _ = setup
    zone[("spf.brevo.com", "*")] = LoopbackDns.TIMEOUT
    result = doctor(config_file, "acme.fr")
    assert result.returncode == 1
    assert "ERROR" in result.stdout and "temperror" in result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_domain(setup):
    """A domain the configuration does not have: one `relay:` line, exit 1."""
    config_file, _, server, _ = setup
    result = doctor(config_file, "other.fr")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("relay: other.fr is not one of the configured domains "
                                     "(domains: acme.fr)")
    assert server.queries == []

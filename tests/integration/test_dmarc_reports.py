"""DMARC aggregate reports, from their arrival to what the operator reads.

Google's report (a zip attached to a mail, re-dated to yesterday) sent to the `role:
feedback` listener is stored: `250` naming one new report; sent again, `250` with none new
(deduplicated on org and report id). /metrics counts its aligned and failing messages for
acme.fr. A zip bomb is refused with `550 5.6.0` saying it decompresses past the bound, a
report about a domain relay does not send for with `550` naming the domain; neither is
stored. `relay dmarc ingest` stores Microsoft's gzip report from a file, `relay dmarc report
acme.fr` shows the sources grouped into relay's route (its egress IPs), Google (by the
source's reverse DNS, served by a loopback DNS server) and unknown sources, each failing one
with its advice, and `relay doctor acme.fr` sums the reports up.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import smtplib
import subprocess
import sys
import time
import urllib.request
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
import yaml

from tests.conftest import base_config
from tests.fakes.dns_server import LoopbackDns

DATA = Path(__file__).resolve().parents[1] / "data" / "dmarc"
GOOGLE = DATA / "google.com!acme.fr!1764547200!1764633599.zip"
MICROSOFT = DATA / "enterprise.protection.outlook.com!acme.fr!1764547200!1764633600.xml.gz"
ROUTE_IPS = ["1.179.112.1", "172.246.240.1"]
DAY = 86400


def redated(xml: bytes) -> bytes:
    """The sample's period (1 December 2025) moved to yesterday, as a fresh report has it."""
    begin = (int(time.time()) // DAY - 1) * DAY
    return xml.replace(b"1764547200", str(begin).encode()) \
              .replace(b"1764633599", str(begin + DAY - 1).encode()) \
              .replace(b"1764633600", str(begin + DAY).encode())


def google_mail(domain: str = "acme.fr") -> bytes:
    with zipfile.ZipFile(GOOGLE) as archive:
        (name,) = archive.namelist()
        xml = redated(archive.read(name)).replace(b"<domain>acme.fr</domain>",
                                                  f"<domain>{domain}</domain>".encode(), 1)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, xml)
    mail = EmailMessage()
    mail["From"] = "noreply-dmarc-support@google.com"
    mail["To"] = "dmarc@relay.test"
    mail["Subject"] = f"Report domain: {domain} Submitter: google.com Report-ID: 11841324781232425786"
    mail.set_content("This is an aggregate report from Google.")
    mail.add_attachment(packed.getvalue(), maintype="application", subtype="zip",
                        filename=GOOGLE.name)
    return mail.as_bytes()


def send(port: int, data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mail-sor-f41.google.com")
        assert client.mail("noreply-dmarc-support@google.com")[0] == 250
        assert client.rcpt("dmarc@relay.test")[0] == 250
        code, text = client.data(data)
    return code, text.decode()


def dmarc_gauges(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^relay_dmarc_messages\{domain="acme.fr",result="(\w+)"\} (\S+)$',
                                 text, re.M)}


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args, "-c", str(config_file)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture
def dns():
    zone = {("41.220.85.209.in-addr.arpa", "PTR"): ["mail-sor-f41.google.com"],
            ("_dmarc.acme.fr", "TXT"): ["v=DMARC1; p=none; rua=mailto:dmarc@relay.test"]}
    with LoopbackDns(zone) as server:
        yield server


def test_reports_are_stored_counted_and_explained(make_relay, dns, tmp_path, upstream,
                                                  server_cert, dkim_keys):
    overrides = {
        "server.listeners": [
            {"name": "local", "address": "127.0.0.1", "port": 0, "tls": "none"},
            {"name": "feedback", "address": "127.0.0.1", "port": 0, "tls": "none",
             "role": "feedback"}],
        "dns": {"nameservers": [dns.nameserver], "timeout": "2s"},
        "metrics": {"address": "127.0.0.1", "port": 0},
        "routes.provider.spf": {"mode": "off", "egress_ips": ROUTE_IPS},
        "blocklists": {"ip_zones": [], "domain_zones": []},
    }
    relay = make_relay(**overrides)
    feedback = relay.port("feedback")

    assert send(feedback, google_mail()) == (250, "2.0.0 Ok: 1 DMARC aggregate report(s) read, 1 new")
    assert send(feedback, google_mail()) == (250, "2.0.0 Ok: 1 DMARC aggregate report(s) read, 0 new")
    assert dmarc_gauges(relay.relay.metrics_port) == {"aligned": 1591.0, "failing": 3.0}

    code, text = send(feedback, (DATA / "zip-bomb.zip").read_bytes())
    assert code == 550 and text.startswith("5.6.0 DMARC aggregate report refused:")
    assert "32 MiB" in text, text
    code, text = send(feedback, google_mail("stranger.example"))
    assert code == 550 and "stranger.example, which relay sends no mail for" in text
    code, text = send(feedback, b"Subject: hello\r\n\r\nJust a note.\r\n")
    assert code == 550 and "DMARC aggregate reports" in text and text.startswith("5.7.1")
    assert dmarc_gauges(relay.relay.metrics_port) == {"aligned": 1591.0, "failing": 3.0}

    config_file = tmp_path / "relay.yaml"
    config_file.write_text(yaml.safe_dump(base_config(tmp_path, upstream.port, server_cert,
                                                      dkim_keys, **overrides)))
    report_file = tmp_path / MICROSOFT.name
    report_file.write_bytes(gzip.compress(redated(gzip.decompress(MICROSOFT.read_bytes()))))
    done = cli(config_file, "dmarc", "ingest", str(report_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "1 report(s), 1 new"
    done = cli(config_file, "dmarc", "ingest", str(DATA / "billion-laughs.xml"))
    assert done.returncode == 1 and "DTD or entities" in done.stderr

    done = cli(config_file, "dmarc", "report", "acme.fr", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["reports"] == 2
    groups = {s["ip"]: (s["group"], s["label"]) for s in shown["sources"]}
    assert groups["1.179.112.1"] == ("route", "provider")
    assert groups["209.85.220.41"] == ("provider", "Google Workspace / Gmail")
    assert groups["203.0.113.9"] == ("unknown", "")
    google = next(s for s in shown["sources"] if s["ip"] == "209.85.220.41")
    assert google["name"] == "mail-sor-f41.google.com"
    unknown = next(s for s in shown["sources"] if s["ip"] == "203.0.113.9")
    assert unknown["failing"] > 0 and "spoofing" in unknown["advice"]
    assert shown["quarantine_ready"] is False and "wait for 14" in shown["quarantine"]

    text = cli(config_file, "dmarc", "report", "acme.fr").stdout
    assert "relay's routes:" in text and "known providers:" in text and "unknown sources:" in text
    assert "p=quarantine: not yet" in text

    done = cli(config_file, "doctor", "acme.fr", "--json")
    aggregate = [c for c in json.loads(done.stdout)["checks"]
                 if c["area"] == "DMARC" and c["check"] == "aggregate"]
    assert len(aggregate) == 1 and aggregate[0]["found"].startswith("2 report(s):")

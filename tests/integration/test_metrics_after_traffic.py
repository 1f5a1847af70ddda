"""After real traffic, /metrics on the private metrics listener shows every metric relay
documents, with the numbers that traffic made in both relay processes (acceptance in the
listener process, delivery in the delivery process), no address in any label, and an
exposition `promtool check metrics` accepts."""
from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import metrics
from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key
from tests.conftest import message, submit, wait_until
from tests.fakes.dns_server import ZoneResolver

ZONE = {
    ("spf.brevo.com", "TXT"): ["v=spf1 ip4:1.179.112.0/20 -all"],
    ("acme.fr", "TXT"): ["v=spf1 include:spf.brevo.com ~all"],
}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class Traffic:
    """The relay, and what its metrics said before the traffic: the listener process's
    counters are the test process's, which other tests' relays moved too."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.before = samples(scrape(relay.relay.metrics_port))

    def counted(self, found: dict, name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(self.before, name, **labels)


@pytest.fixture
def traffic(make_relay, upstream):
    """One message to a good and a dead address (a delivery, a bounce, its DSN held by the
    2/h domain rate, a suppression), one refused sender, one complaint report."""
    relay = make_relay(resolver=ZoneResolver(ZONE), **{
        "metrics": {"address": "127.0.0.1", "port": 0},
        "routes.provider.spf": {"mode": "enforce", "egress_ips": ["1.179.112.1"],
                                "include": "spf.brevo.com"},
        "limits": {"domain_rate": {"acme.fr": "2/h"}},
    })
    traffic = Traffic(relay)
    smtp = relay.port("local")
    assert submit(smtp, "billing@acme.fr", ["ok@example.net", "permfail@example.net"],
                  message()) == {}
    with pytest.raises(smtplib.SMTPSenderRefused):
        submit(smtp, "billing@unknown.example", ["ok@example.net"], message())
    now = relay.relay.clock.now()
    relay.call(relay.relay.intake.record([FeedbackEvent(
        FeedbackKind.COMPLAINED, "ok@example.net", "arf", now, None, "abuse", None,
        dedupe_key("arf", 1), "acme.fr")]))
    upstream.wait_for(lambda msgs: len(msgs) == 1, what="the delivery")
    return traffic


def test_every_documented_metric_is_exposed_with_the_traffic_it_counted(traffic):
    port = traffic.relay.relay.metrics_port

    def delivery_counted() -> dict:
        found = samples(scrape(port))
        if value(found, "relay_governor_deferrals_total", reason="rate") >= 1:
            return found
        return {}
    found = wait_until(delivery_counted, timeout=15, what="the delivery process's counters")
    names = {name for name, _ in found}
    for name, kind in metrics.documented().items():
        expected = name + "_count" if kind == "histogram" else name
        assert expected in names, f"{name} is documented but not exposed"

    assert traffic.counted(found, "relay_messages_received_total", listener="local", stream="transactional") == 1
    assert traffic.counted(found, "relay_messages_rejected_total", reason="sender") == 1
    assert traffic.counted(found, "relay_smtp_replies_total", command="MAIL", code="250") >= 1
    assert traffic.counted(found, "relay_smtp_replies_total", command="MAIL", code="550") == 1
    assert traffic.counted(found, "relay_smtp_replies_total", command="DATA", code="250") == 1
    assert traffic.counted(found, "relay_dkim_signatures_total", algorithm="rsa-sha256", result="ok") >= 2
    assert traffic.counted(found, "relay_dkim_signatures_total", algorithm="ed25519-sha256", result="ok") >= 2
    assert traffic.counted(found, "relay_spf_checks_total", result="pass") >= 1
    assert traffic.counted(found, "relay_deliveries_total", route="provider", result="delivered") == 1
    assert traffic.counted(found, "relay_deliveries_total", route="provider", result="bounced") == 1
    assert traffic.counted(found, "relay_delivery_duration_seconds_count", route="provider") >= 1
    assert traffic.counted(found, "relay_feedback_events_total", source="upstream", type="bounced_hard") == 1
    assert traffic.counted(found, "relay_feedback_events_total", source="arf", type="complained") == 1
    assert value(found, "relay_suppressions", reason="hard_bounce") == 1
    assert value(found, "relay_suppressions", reason="complaint") == 1
    assert value(found, "relay_queue_messages", state="held") == 1          # the DSN
    assert value(found, "relay_queue_oldest_seconds", state="held") > 0      # the DSN's age
    assert value(found, "relay_domain_complaint_rate", domain="acme.fr") == 1.0   # 1 of 1 delivered
    assert value(found, "relay_domain_warmup_day", domain="acme.fr") == 0
    assert value(found, "relay_domain_paused", domain="acme.fr", scope="all") == 0
    assert traffic.counted(found, "relay_delivery_process_restarts_total") == 0
    assert not [labels for _, labels in found if any("@" in v for _, v in labels)]


def test_promtool_accepts_the_exposition(traffic, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail("promtool is required (RELAY_REQUIRE_TOOLS=1): apt-get install prometheus")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    text = scrape(traffic.relay.relay.metrics_port)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

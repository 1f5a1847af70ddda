"""/metrics on the private metrics listener shows each configured domain's complaint and
bounce rates (fractions of recipients delivered over reputation.window), its pauses and the
queue, read from the spool when Prometheus scrapes."""
from __future__ import annotations

import urllib.request

from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key
from tests.conftest import message, submit, wait_until


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_complaint_and_bounce_rates_are_exported(make_relay, upstream):
    relay = make_relay(metrics={"address": "127.0.0.1", "port": 0})
    for i in range(4):
        assert submit(relay.port("local"), "billing@acme.fr", [f"c{i}@example.net"], message()) == {}
    upstream.wait_for(lambda msgs: len(msgs) == 4, what="four deliveries")
    now = relay.relay.clock.now()
    relay.call(relay.relay.intake.record([
        FeedbackEvent(FeedbackKind.COMPLAINED, "c0@example.net", "test", now, None, "", None,
                      dedupe_key("test", 1), "acme.fr"),
        FeedbackEvent(FeedbackKind.BOUNCED_HARD, "c1@example.net", "test", now, None, "", "5.1.1",
                      dedupe_key("test", 2), "acme.fr")]))
    # The provider's 250 comes before relay writes the outcome: wait for the fourth delivered
    # recipient to count (a rate of 1/3 until then).
    wait_until(lambda: 'relay_domain_complaint_rate{domain="acme.fr"} 0.25' in scrape(relay.relay.metrics_port),
               what="a complaint rate over four delivered recipients")
    text = scrape(relay.relay.metrics_port)
    assert 'relay_domain_bounce_rate{domain="acme.fr"} 0.25' in text
    assert 'relay_domain_complaint_rate{domain="other.fr"} 0.0' in text
    assert 'relay_domain_paused{domain="acme.fr",scope="all"} 0.0' in text
    assert "relay_queue_messages" in text
    assert "@example.net" not in text                       # never an address as a label

"""A sender domain whose SPF does not authorize the route is refused at MAIL FROM, with the
fix in the reply; a broken record is refused as broken; DNS that cannot answer defers.

A real DNS server on loopback serves the four sender domains; the relay's only nameserver is
that server (`dns.nameservers`), with `dns.timeout: 1s`. The route `provider` (Brevo-like)
enforces SPF for its egress address 1.179.112.1 and tells owners to add
`include:spf.brevo.com`:

    acme.fr     v=spf1 include:spf.brevo.com ~all        -> 250, delivered
    bad.fr      v=spf1 ip4:192.0.2.0/24 -all             -> 550 5.7.23 "add include:..."
    broken.fr   two v=spf1 records                        -> 550 5.5.2
    slow.fr     never answered                            -> 451 4.4.3 after ~1 s
"""
import smtplib
import time

import pytest

from relay.dns import DnsResolver
from tests.conftest import message, wait_until
from tests.fakes.dns_server import LoopbackDns

ZONE = {
    ("spf.brevo.com", "TXT"): ["v=spf1 ip4:1.179.112.0/20 ip4:172.246.240.0/20 -all"],
    ("acme.fr", "TXT"): ["google-site-verification=abc", "v=spf1 include:spf.brevo.com ~all"],
    ("bad.fr", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("broken.fr", "TXT"): ["v=spf1 include:spf.brevo.com -all", "v=spf1 mx -all"],
    ("slow.fr", "*"): LoopbackDns.TIMEOUT,
}
DOMAINS = ["acme.fr", "bad.fr", "broken.fr", "slow.fr"]


@pytest.fixture
def dns():
    with LoopbackDns(dict(ZONE)) as server:
        yield server


def test_spf_gate_at_mail_from(make_relay, upstream, dns):
    """Over one SMTP session on the `local` listener: bad.fr gets 550 5.7.23 with the fix,
    broken.fr 550 5.5.2, slow.fr 451 4.4.3 well within 5 s, and acme.fr 250 and delivery.
    Only acme.fr's message reaches the provider; every query went to the loopback server."""
    relay = make_relay(**{
        "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": DOMAINS}],
        "domains": {domain: {"route": "provider"} for domain in DOMAINS},
        "routes.provider.spf": {"mode": "enforce", "egress_ips": ["1.179.112.1"],
                                "include": "spf.brevo.com"},
        "dns": {"nameservers": [dns.nameserver], "timeout": "1s"},
    })
    assert isinstance(relay.relay.resolver, DnsResolver)

    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")

        code, text = client.docmd("MAIL", "FROM:<billing@bad.fr>")
        assert (code, text[:6]) == (550, b"5.7.23")
        assert b"route provider" in text
        assert b"add include:spf.brevo.com to the SPF record of bad.fr" in text
        assert client.docmd("RCPT", "TO:<client@example.net>")[0] == 503   # no transaction

        code, text = client.docmd("MAIL", "FROM:<billing@broken.fr>")
        assert (code, text[:5]) == (550, b"5.5.2")
        assert b"broken.fr" in text and b"2 SPF records" in text

        started = time.monotonic()
        code, text = client.docmd("MAIL", "FROM:<billing@slow.fr>")
        elapsed = time.monotonic() - started
        assert (code, text[:5]) == (451, b"4.4.3")
        assert b"slow.fr" in text
        assert elapsed < 3.0

        code, text = client.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert (code, text[:5]) == (250, b"2.1.0")
        client.rcpt("client@example.net")
        code, text = client.data(message().encode())
        assert code == 250 and b"queued as" in text

    [delivered] = upstream.wait_for(lambda msgs: msgs, what="acme.fr's message")
    assert delivered.mail_from == "billing@acme.fr"
    assert delivered.rcpt_tos == ["client@example.net"]
    wait_until(lambda: relay.relay.spool.summaries() == [], what="an empty spool")
    with upstream.lock:
        assert len(upstream.messages) == 1

    asked = {name for name, rdtype in dns.queries if rdtype == "TXT" and not name.startswith("_dmarc.")}
    assert asked == {"acme.fr", "spf.brevo.com", "bad.fr", "broken.fr", "slow.fr"}

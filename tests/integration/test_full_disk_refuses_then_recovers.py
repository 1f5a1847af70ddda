"""A full spool filesystem does not wedge relay (as Postfix's `queue_minfree`).

The spool lives on a real 24 MB tmpfs, the provider is down and the application keeps
sending: once less than `spool.min_free` is left, new mail gets `452 4.3.1` at MAIL FROM
(the application keeps it), `relay_spool_free_bytes` drops below
`relay_spool_min_free_bytes` and `/readyz` says why. When the provider comes back, the
queued mail leaves, each message once; the space it held (SQLite's free pages) counts as
free again, and relay takes mail again by itself.
"""
from __future__ import annotations

import re
import smtplib
import urllib.request

import pytest

from tests.conftest import message, readyz, wait_until
from tests.fakes.upstream import FakeUpstream
from tests.processes import free_port
from tests.tmpfs import mounted

BODY = "x" * 76 + "\r\n"
FILLER = BODY * 2600                       # ~200 KB per message


def send(port: int, token: str, body: str = FILLER) -> tuple[str, int, str]:
    """One message from the networks user: the stage of the first refusal ("mail" or
    "data") with its reply, or "data" with the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("erp.test")
        code, text = client.mail("billing@acme.fr")
        if code != 250:
            return "mail", code, text.decode()
        client.rcpt("client@example.net")
        code, text = client.data(message(subject=f"run {token}", body=body))
    return "data", code, text.decode()


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(relay_spool_\w+) (\S+)$", text, re.M)}


@pytest.fixture
def spool_fs(tmp_path):
    with mounted(tmp_path / "spool-fs", "24m") as directory:
        yield directory


def test_full_disk_refuses_new_mail_then_recovers_by_itself(make_relay, spool_fs):
    provider_port = free_port()                      # nothing listens there yet: provider down
    relay = make_relay(**{
        "spool.path": str(spool_fs / "spool"), "spool.min_free": "6MB",
        "routes.provider.port": provider_port,
        "metrics": {"address": "127.0.0.1", "port": 0}})
    port, metrics_port = relay.port("local"), relay.relay.metrics_port

    # 200 KB messages until one is refused: at MAIL FROM once less than min_free is left,
    # or before that at DATA, when this message would take the spool below it; then small
    # ones, which still fit, until MAIL FROM refuses
    acked, refusals = [], []
    for n in range(400):
        stage, code, text = send(port, f"m{n}", FILLER if not refusals else BODY * 20)
        if code == 250:
            acked.append(f"m{n}")
            continue
        assert code == 452 and text.startswith("4.3.1"), (stage, code, text)
        refusals.append(stage)
        if stage == "mail":
            break
    assert refusals and refusals[-1] == "mail", f"the 24 MB filesystem never filled: {refusals}"
    assert len(acked) >= 30, len(acked)
    gauges = scrape(metrics_port)
    assert gauges["relay_spool_free_bytes"] < gauges["relay_spool_min_free_bytes"] == 6 * 2 ** 20
    status, body = readyz(metrics_port)
    assert status == 503 and "below spool.min_free" in body["checks"]["spool_space"], body

    provider = FakeUpstream(port=provider_port).start()   # the provider comes back
    try:
        provider.wait_for(lambda msgs: len(msgs) >= len(acked), timeout=60,
                          what="the queued mail, delivered")
        wait_until(lambda: send(port, "after")[1] == 250, timeout=30,
                   what="relay to take mail again by itself")
        provider.wait_for(lambda msgs: any(b"run after" in m.data for m in msgs), timeout=30,
                          what="the new message, delivered")
        subjects = [re.search(rb"Subject: run (\w+)", m.data)[1].decode() for m in provider.messages]
        assert sorted(s for s in subjects if s != "after") == sorted(acked)   # each once
        assert readyz(metrics_port)[0] == 200
    finally:
        provider.stop()

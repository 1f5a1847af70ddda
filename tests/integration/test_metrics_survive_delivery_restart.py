"""The delivery process's counters are served by the listener process; when the delivery
process dies and is restarted, its numbers so far are kept (Prometheus never sees a counter
go back), relay_delivery_process_restarts_total counts the restart, and the new process's
deliveries add to the old ones. /readyz stays ready throughout: mail is still accepted."""
from __future__ import annotations

import os
import signal
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import message, readyz, submit, wait_until


def counters(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def delivered(port: int) -> float:
    key = ("relay_deliveries_total", frozenset({"route": "provider", "result": "delivered"}.items()))
    return counters(port).get(key, 0.0)


def test_counters_survive_a_delivery_process_crash(make_relay, upstream):
    relay = make_relay(metrics={"address": "127.0.0.1", "port": 0})
    port = relay.relay.metrics_port
    smtp = relay.port("local")
    # what other relays of this test process counted (a delivery pipeline run in-process)
    base = delivered(port)
    for i in range(3):
        assert submit(smtp, "billing@acme.fr", [f"first{i}@example.net"], message()) == {}
    wait_until(lambda: delivered(port) == base + 3, timeout=15, what="3 deliveries counted")

    def restarts() -> float:    # counted in the listener process: this test process
        return counters(port).get(("relay_delivery_process_restarts_total", frozenset()), 0)
    before = restarts()
    old = relay.relay.delivery._proc.pid
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: relay.relay.delivery._proc.pid != old and restarts() == before + 1,
               timeout=15, what="the delivery process to be restarted")
    assert delivered(port) == base + 3              # the dead process's count is kept
    assert readyz(port)[0] == 200

    for i in range(2):
        assert submit(smtp, "billing@acme.fr", [f"second{i}@example.net"], message()) == {}
    wait_until(lambda: delivered(port) == base + 5, timeout=15, what="5 deliveries counted")


def test_readyz_says_which_listener_is_down(make_relay):
    relay = make_relay(metrics={"address": "127.0.0.1", "port": 0})
    port = relay.relay.metrics_port
    status, body = readyz(port)
    assert (status, body["checks"]) == (200, {"listeners": "ok", "spool": "ok", "spool_space": "ok",
                                       "state": "ok"})

    async def close_local() -> None:
        relay.relay.listeners.servers["local"].close()
    relay.call(close_local())
    status, body = readyz(port)
    assert status == 503
    assert body["status"] == "not ready"
    assert body["checks"]["listeners"] == "not listening: local"
    assert body["checks"]["spool"] == "ok"

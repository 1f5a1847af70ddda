"""Two relays, one Redis (`state.backend: redis`), one recording provider: the fleet keeps
one limit, not one per node.

Each relay has its own spool and its own delivery process; they share the governance state
on a real redis-server the test starts. With `domain_rate: 20/min`, 30 recipients submitted
to each node (60 in all) leave 20 in the first minute, together: on one node each would
have sent 20. A suppression made through node A refuses at node B's RCPT; a pause made on
A holds the mail B accepts.
"""
from __future__ import annotations

import smtplib
import time

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.redis_server import RedisServer


@pytest.fixture
def fleet(tmp_path, make_relay, monkeypatch):
    """Two relays on one Redis: (node A, node B)."""
    with RedisServer(tmp_path / "redis") as redis:
        monkeypatch.setenv("RELAY_REDIS_URL", redis.url)
        nodes = [make_relay(**{"spool.path": str(tmp_path / name),
                               "state": {"backend": "redis", "node": name},
                               "limits": {"domain_rate": {"default": "20/min"}},
                               "server.max_recipients": 100})
                 for name in ("a", "b")]
        yield nodes
        for node in nodes:
            node.stop()


def delivered(upstream) -> int:
    return sum(len(m.rcpt_tos) for m in upstream.messages)


def test_a_rate_holds_for_the_fleet_not_per_node(fleet, upstream):
    a, b = fleet
    for node, name in ((a, "a"), (b, "b")):
        for n in range(3):               # 3 messages of 10 recipients to each node
            rcpts = [f"{name}{n}-{i}@example.net" for i in range(10)]
            assert submit(node.port("local"), "billing@acme.fr", rcpts, message()) == {}
    wait_until(lambda: delivered(upstream) >= 20, timeout=15, what="the minute's 20")

    def held() -> int:
        return sum(s.pending for node in fleet for s in node.relay.spool.summaries()
                   if s.next_attempt > time.time() + 30)
    wait_until(lambda: held() == 40, timeout=15, what="the other 40 held for the rate")
    assert delivered(upstream) == 20, [m.rcpt_tos for m in upstream.messages]


def test_a_suppression_or_a_pause_made_on_one_node_holds_on_the_other(fleet, upstream):
    a, b = fleet
    a.call(a.relay.state.suppress("gone@example.net", "acme.fr", _manual()))
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        submit(b.port("local"), "billing@acme.fr", ["gone@example.net"], message())
    a.call(a.relay.state.pause("acme.fr", "investigating"))
    assert submit(b.port("local"), "billing@acme.fr", ["held@example.net"], message()) == {}
    wait_until(lambda: [s for s in b.relay.spool.summaries() if s.next_attempt > time.time() + 600],
               timeout=15, what="node B to hold the mail node A's pause covers")
    assert upstream.delivered_to("held@example.net") == []


def _manual():
    from relay.state.suppressions import SuppressionReason
    return SuppressionReason.MANUAL


def test_fleet_status_names_the_nodes_and_the_redis(fleet, tmp_path, capsys, upstream,
                                                    server_cert, dkim_keys):
    """Each node's listener writes a heartbeat with its `state.node` name: `relay fleet
    status` lists both, and Redis reachable with its latency."""
    import yaml

    from relay.cli import main
    from tests.conftest import base_config
    config_file = tmp_path / "relay.yaml"
    config_file.write_text(yaml.safe_dump(base_config(
        tmp_path, upstream.port, server_cert, dkim_keys,
        **{"spool.path": str(tmp_path / "cli"), "state": {"backend": "redis", "node": "cli"}})))

    def both_seen() -> str | None:
        assert main(["fleet", "status", "-c", str(config_file)]) == 0
        out = capsys.readouterr().out
        nodes = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
        return out if {"a", "b"} <= nodes else None
    shown = wait_until(both_seen, timeout=15, what="both nodes' heartbeats")
    assert "redis: reachable" in shown and "nodes seen in the last day: 2" in shown

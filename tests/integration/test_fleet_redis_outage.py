"""A fleet under load loses its Redis (SIGSTOP, then SIGKILL, then started again empty):
no acknowledged message is lost or sent twice, nothing leaves that Redis did not grant, mail
flows again once it is back, and the shared limit still holds although Redis forgot it.

Two `relay serve` processes share one real redis-server and `domain_rate: 100/min`;
application threads submit numbered messages (X-Seq) to both. The first 70 leave at once
(under the limit). Redis is frozen: the next 70 are still accepted (250) by both nodes, and
none of them reaches the provider, although the minute has 30 left. Redis is killed and
started empty; the nodes refill it with the 70 they sent before anything more is granted,
so the rest of the minute lets 30 more leave, not 100; the last 40 leave the next minute.
"""
from __future__ import annotations

import re
import smtplib
import threading
import time

import pytest
import yaml

from tests.conftest import message, wait_until
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstream import FakeUpstream
from tests.processes import RelayProcess, free_port

FIRST = 70                  # sent before Redis stops: under the minute's 100
MESSAGES = 140              # the other 70 are accepted while Redis is stopped
RATE = 100                  # recipients per minute, for the whole fleet
THREADS = 4
_SEQ = re.compile(rb"\r\nX-Seq: (\d+)\r\n")


@pytest.fixture
def redis(tmp_path, monkeypatch):
    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv("RELAY_REDIS_URL", server.url)
        yield server


@pytest.fixture
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def fleet(tmp_path, redis, upstream, dkim_keys):
    """Two `relay serve` processes, nodes a and b, on the test's Redis."""
    nodes = []
    for name in ("a", "b"):
        port = free_port()
        config = {
            "server": {"hostname": f"relay-{name}.test", "listeners": [
                {"name": "local", "address": "127.0.0.1", "port": port, "tls": "none"}]},
            "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
            "spool": {"path": str(tmp_path / name / "spool"), "max_age": "1h",
                      "retry": {"initial": "0.2s", "max": "1s"}},
            "state": {"backend": "redis", "node": name, "timeout": "0.5s"},
            "limits": {"domain_rate": {"default": f"{RATE}/min"}},
            "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}],
            "domains": {"acme.fr": {"route": "provider", "dkim": [
                {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])}]}},
            "routes": {"provider": {"host": "127.0.0.1", "port": upstream.port, "tls": "none",
                                    "timeout": "10s"}},
        }
        path = tmp_path / name / "relay.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(config))
        nodes.append(RelayProcess(path, port).start())
    yield nodes
    for node in nodes:
        node.stop()


class Applications:
    """Threads submitting numbered messages to both nodes, noting each 250; the messages
    from FIRST on wait for `more`."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.accepted: set[int] = set()
        self.lock = threading.Lock()
        self.more = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int) -> None:
        with smtplib.SMTP("127.0.0.1", self.ports[i % 2], timeout=30) as client:
            for seq in range(i, MESSAGES, THREADS):
                if seq >= FIRST:
                    self.more.wait(60)
                client.sendmail("billing@acme.fr", [f"client+{seq}@example.net"],
                                message(subject=f"Invoice {seq}", extra=f"X-Seq: {seq}\r\n"))
                with self.lock:
                    self.accepted.add(seq)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "an application thread is stuck"


def arrivals(upstream: FakeUpstream) -> list[tuple[float, int]]:
    """(when, X-Seq) of every message the provider took, in order."""
    with upstream.lock:
        return sorted((r.at, int(m.group(1))) for r in upstream.messages
                      if (m := _SEQ.search(r.data)))


def test_redis_stopped_then_killed_under_load(fleet, redis, upstream):
    apps = Applications([node.port for node in fleet])
    wait_until(lambda: len(arrivals(upstream)) >= FIRST, timeout=30,
               what=f"the first {FIRST} at the provider")

    redis.freeze()
    apps.more.set()
    apps.join(timeout=90)                             # accepted while Redis does not answer
    assert apps.accepted == set(range(MESSAGES))
    assert all(node.proc.poll() is None for node in fleet)
    # Nothing Redis did not grant has left: the messages accepted meanwhile all wait,
    # although the minute has room for 30 more.
    assert {seq for _, seq in arrivals(upstream)} == set(range(FIRST))

    redis.kill()
    restarted = time.time()
    redis.start()                                     # empty: save "" and no AOF

    wait_until(lambda: {seq for _, seq in arrivals(upstream)} >= apps.accepted, timeout=120,
               what="every accepted message at the provider after the restart")
    sent = arrivals(upstream)
    seqs = [seq for _, seq in sent]
    assert len(seqs) == len(set(seqs)), "a message was sent twice"
    assert any(at > restarted for at, _ in sent), "nothing flowed after the restart"
    # The limit held across the restart: in any minute (less 2 s for the way from the grant
    # to the provider), at most RATE recipients arrived; Redis forgot the first 70, the
    # nodes did not.
    times = [at for at, _ in sent]
    busiest = max(sum(1 for t in times if start <= t < start + 58) for start in times)
    assert busiest <= RATE, f"{busiest} recipients in one minute; the limit is {RATE}"

"""Once relay has answered 250, the message survives a crash: kill -9 loses nothing.

`relay serve` runs as a real process. Several application threads submit a stream of
messages (each with a unique X-Seq header) and note every one that got 250; the process is
SIGKILLed in the middle of the load, while the provider is slow, so many accepted messages
are still in the spool and some are being delivered. The same configuration is started
again, the applications carry on, and every message that got 250 must reach the provider.
Duplicates are allowed (delivery is at-least-once); loss is not.
"""
from __future__ import annotations

import re
import smtplib
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from tests.processes import RelayProcess, accepts_connections, free_port
from tests.conftest import message, wait_until
from tests.fakes.upstream import FakeUpstream

MESSAGES = 300
THREADS = 6
KILL_AFTER = 100            # accepted messages before the SIGKILL
_SEQ = re.compile(rb"\r\nX-Seq: (\d+)\r\n")



@pytest.fixture
def slow_upstream():
    """The provider, slow on slow@ recipients: deliveries lag far behind acceptance."""
    fake = FakeUpstream(slow_delay=1.5).start()
    yield fake
    fake.stop()


@pytest.fixture
def relay_process(tmp_path, slow_upstream, dkim_keys):
    port = free_port()
    config = {
        "server": {"hostname": "relay.test",
                   "listeners": [{"name": "local", "address": "127.0.0.1", "port": port, "tls": "none"}]},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
        "spool": {"path": str(tmp_path / "spool"), "max_age": "1h",
                  "retry": {"initial": "0.2s", "max": "1s"}},
        "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}],
        "domains": {"acme.fr": {"route": "provider",
                                "dkim": [{"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])}]}},
        "routes": {"provider": {"host": "127.0.0.1", "port": slow_upstream.port, "tls": "none",
                                "max_connections": 2, "timeout": "10s"}},
    }
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    started: list[RelayProcess] = []

    def start() -> RelayProcess:
        started.append(RelayProcess(path, port).start())
        return started[-1]
    yield start
    for process in started:
        process.stop()


class Application:
    """Threads submitting numbered messages, as an application would, noting each 250."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted: set[int] = set()
        self.unanswered: set[int] = set()      # connection lost: the outcome is unknown
        self.lock = threading.Lock()
        self.half_way = threading.Event()       # set by the test: the rest may be sent
        self.threads = [threading.Thread(target=self._run, args=(range(i, MESSAGES, THREADS),),
                                         daemon=True) for i in range(THREADS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), "an application thread is stuck"

    def _run(self, seqs: range) -> None:
        client: smtplib.SMTP | None = None
        for seq in seqs:
            if seq >= KILL_AFTER + THREADS:         # pace the load so the kill lands within it
                self.half_way.wait(30)
            # One message in ten goes to slow@, whose DATA the provider takes 1.5 s to answer.
            rcpt = "slow@example.net" if seq % 10 == 0 else f"client+{seq}@example.net"
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
                    client.ehlo("app.test")
                client.sendmail("billing@acme.fr", [rcpt],
                                message(subject=f"Invoice {seq}", extra=f"X-Seq: {seq}\r\n"))
                with self.lock:
                    self.accepted.add(seq)
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.unanswered.add(seq)
                client = None
                # The relay is gone: wait until it listens again, as a retrying app would.
                wait_until(lambda: accepts_connections(self.port), timeout=30,
                           what="the relay to come back")
        if client is not None:
            client.quit()


def _seqs(upstream: FakeUpstream) -> list[int]:
    with upstream.lock:
        return [int(m.group(1)) for r in upstream.messages if (m := _SEQ.search(r.data))]


def _spooled(spool_dir: Path) -> int:
    conn = sqlite3.connect(spool_dir / "relay.sqlite3")
    try:
        return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    finally:
        conn.close()


def test_every_accepted_message_is_delivered_after_a_sigkill(tmp_path, relay_process, slow_upstream):
    """SIGKILL mid-load with a backlog in the spool; after restart all 250'd messages arrive."""
    relay = relay_process()
    app = Application(relay.port)
    app.start()

    wait_until(lambda: len(app.accepted) >= KILL_AFTER and _seqs(slow_upstream), timeout=30,
               what=f"{KILL_AFTER} accepted and deliveries under way")
    app.half_way.set()
    wait_until(lambda: len(app.accepted) >= KILL_AFTER + 2 * THREADS, timeout=30,
               what="the load to resume")
    relay.kill()
    with app.lock:
        accepted_before_kill = set(app.accepted)
    delivered_before_kill = set(_seqs(slow_upstream))
    queued_at_crash = _spooled(tmp_path / "spool")
    # The crash really hit a backlog: accepted messages not yet at the provider, in the spool.
    assert len(accepted_before_kill - delivered_before_kill) >= 30, (
        len(accepted_before_kill), len(delivered_before_kill))
    assert queued_at_crash >= 30
    assert delivered_before_kill, "nothing was delivered before the crash: no delivery in progress"

    slow_upstream.slow_delay = 0.05          # the provider recovers while relay is down
    relay = relay_process()
    app.join(timeout=60)
    assert len(app.accepted) + len(app.unanswered) == MESSAGES
    assert len(app.accepted) > len(accepted_before_kill), "no message was accepted after restart"

    missing = lambda: app.accepted - set(_seqs(slow_upstream))
    wait_until(lambda: not missing(), timeout=30,
               what="every accepted message at the provider")
    wait_until(lambda: _spooled(tmp_path / "spool") == 0, timeout=10, what="an empty spool")
    assert relay.stop() == 0, relay.tail()
    assert set(_seqs(slow_upstream)) <= set(range(MESSAGES))

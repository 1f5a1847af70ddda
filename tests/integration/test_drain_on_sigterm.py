"""SIGTERM drains `relay serve`: nothing accepted is lost, nothing half-done is cut off.

On SIGTERM the relay stops listening at once, answers idle sessions `421 4.3.2` and closes
them, lets a session in the middle of a transaction finish it (its message is queued with
the usual 250), then exits 0. Mail still queued (here: the provider is unreachable) stays
in the spool and is delivered by the next start.
"""
from __future__ import annotations

import smtplib
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.processes import RelayProcess, accepts_connections, free_port
from tests.conftest import message, submit, wait_until

EXIT_DEADLINE = 10.0        # seconds from SIGTERM to exit



@pytest.fixture
def serve(tmp_path, dkim_keys):
    """serve(route_port) starts `relay serve` on a fixed local port with acme.fr -> route_port."""
    port = free_port()
    path = tmp_path / "relay.yaml"
    started: list[RelayProcess] = []

    def start(route_port: int) -> RelayProcess:
        path.write_text(yaml.safe_dump({
            "server": {"hostname": "relay.test", "listeners": [
                {"name": "local", "address": "127.0.0.1", "port": port, "tls": "none"}]},
            "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
            "spool": {"path": str(tmp_path / "spool"), "max_age": "1h",
                      "retry": {"initial": "0.2s", "max": "1s"}},
            "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}],
            "domains": {"acme.fr": {"route": "provider", "dkim": [
                {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])}]}},
            "routes": {"provider": {"host": "127.0.0.1", "port": route_port, "tls": "none",
                                    "max_connections": 2, "timeout": "5s"}},
        }))
        started.append(RelayProcess(path, port).start())
        return started[-1]
    yield start
    for process in started:
        process.cleanup()


def _spool(tmp_path: Path) -> list[tuple[str, int, bytes]]:
    """(id, attempts, body) of every message in the spool, read straight from SQLite."""
    conn = sqlite3.connect(tmp_path / "spool" / "relay.sqlite3")
    try:
        return [(i, a, bytes(b)) for i, a, b in
                conn.execute("SELECT id, attempts, body FROM messages ORDER BY created")]
    finally:
        conn.close()


def test_sigterm_drains_sessions_exits_0_and_keeps_the_queue(tmp_path, serve, upstream):
    """Idle sessions get 421, a transaction in progress finishes, the exit is 0, the queue survives."""
    unreachable = free_port()                          # the provider is down for the first run
    relay = serve(unreachable)
    assert submit(relay.port, "billing@acme.fr", ["client@example.net"],
                  message(subject="Queued before SIGTERM")) == {}
    wait_until(lambda: [m for m in _spool(tmp_path) if m[1] >= 1], timeout=10,
               what="a deferred delivery attempt")

    idle = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    idle.ehlo("idle.test")
    busy = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
    busy.ehlo("busy.test")
    assert busy.mail("billing@acme.fr")[0] == 250
    assert busy.rcpt("client@example.net")[0] == 250

    relay.terminate()
    code, text = idle.getreply()                       # unsolicited: the relay speaks first
    assert (code, text[:5]) == (421, b"4.3.2")
    idle.close()
    wait_until(lambda: not accepts_connections(relay.port), timeout=5,
               what="the listener to stop accepting")

    code, text = busy.data(message(subject="Finished during the drain"))
    assert code == 250 and b"queued as" in text
    busy.close()
    assert relay.wait(EXIT_DEADLINE) == 0, relay.tail()

    queued = _spool(tmp_path)
    assert len(queued) == 2
    assert b"Subject: Queued before SIGTERM" in queued[0][2]
    assert b"Subject: Finished during the drain" in queued[1][2]
    assert upstream.messages == []

    relay = serve(upstream.port)                       # next start, the provider is back
    received = upstream.wait_for(lambda msgs: msgs if len(msgs) >= 2 else None,
                                 what="both queued messages at the provider")
    subjects = sorted(m.data.split(b"\r\nSubject: ")[1].split(b"\r\n")[0] for m in received)
    assert subjects == [b"Finished during the drain", b"Queued before SIGTERM"]
    wait_until(lambda: not _spool(tmp_path), what="an empty spool")
    relay.terminate()
    assert relay.wait(EXIT_DEADLINE) == 0, relay.tail()

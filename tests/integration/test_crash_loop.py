"""A crash loop loses no acknowledged message; it only re-sends what was in flight.

`relay serve` runs as a real process under continuous load from parallel applications, each
message with its own token (in its Subject and Message-ID). Ten times, at a random moment
(seeded; the seed is printed, `CRASH_LOOP_SEED=n` replays it), one of three things is
SIGKILLed: the whole relay, the listener process alone (its delivery process sees the wake-up
pipe close, finishes its attempts and exits), or the delivery process alone (the listener
starts another). Each kill comes once the relay both accepts and delivers, so it has mail in
flight; the relay is started again when the listener died. Once the load stops and the spool
has drained:
- every message that got `250` reached the provider (nothing lost);
- every extra copy is explained by a kill: at some kill the message had reached the provider
  yet was still in the spool once its deliverer was dead (delivered, not yet recorded), or it
  was re-sent while the test looked. Delivery is at-least-once; loss is not allowed.
The figures (acked, delivered, lost, duplicates, kills by kind, seed) are printed and written
to crash_loop.json in the test's tmp dir.
"""
from __future__ import annotations

import enum
import itertools
import json
import os
import random
import re
import signal
import smtplib
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import message, wait_until
from tests.fakes.upstream import FakeUpstream
from tests.processes import RelayProcess, accepts_connections, free_port, gone

CYCLES = 10
CLIENTS = 4
KILL_DELAY = (0.2, 1.5)         # seconds from this relay's first delivery to the kill
ORPHAN_EXIT = 35.0              # the delivery process finishes its attempts (30 s at most)
DRAIN_DEADLINE = 40.0
_TOKEN = re.compile(rb"Subject: crash loop ([\w-]+)")


def _message(token: str) -> str:
    return message(subject=f"crash loop {token}",
                   extra=f"Message-ID: <{token}@crash-loop.test>\r\n")


class Kill(enum.Enum):
    GROUP = "group"             # listener and delivery processes at once
    LISTENER = "listener"
    DELIVERY = "delivery"


class WatchedUpstream(FakeUpstream):
    """The recording fake, also knowing which of its sessions are open. aiosmtpd cancels a
    session's handler when the peer's EOF (or reset) is read, so once a dead process's
    sessions have ended here, nothing more of what it sent can arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: set[int] = set()
        self._serials = itertools.count()       # never reused, unlike id()

    def _factory(self):
        protocol = super()._factory()
        key = next(self._serials)
        made, eof, lost = protocol.connection_made, protocol.eof_received, protocol.connection_lost

        def connection_made(transport):
            with self.lock:
                self.sessions.add(key)
            made(transport)

        def eof_received():
            result = eof()                       # cancels the session's handler first
            with self.lock:
                self.sessions.discard(key)
            return result

        def connection_lost(exc):
            lost(exc)
            with self.lock:
                self.sessions.discard(key)
        protocol.connection_made, protocol.eof_received = connection_made, eof_received
        protocol.connection_lost = connection_lost
        return protocol

    def open_sessions(self) -> set[int]:
        with self.lock:
            return set(self.sessions)

    def arrivals(self) -> list[str]:
        """The token of every message received, in order of arrival."""
        with self.lock:
            return [m.group(1).decode() for r in self.messages if (m := _TOKEN.search(r.data))]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@dataclass(frozen=True)
class KillRecord:
    """What the provider and the spool held once a kill's victims were dead: messages among
    the first `arrived` that are in `spooled` were delivered but not recorded as such."""
    kind: Kill
    arrived: int                # provider arrivals when the spool was read...
    arrived_after: int          # ... and just after (a new delivery process may be running)
    spooled: frozenset[str]
    orphan_exit: float | None   # seconds the listener's orphaned delivery process lived on


class Load:
    """Application threads sending continuously; a message counts as acked on 250 to DATA.
    A refused or cut-off message is simply not acked (the application keeps it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(f"c{i}",), daemon=True)
                        for i in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive(), "an application thread is stuck"

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self, name: str) -> None:
        client: smtplib.SMTP | None = None
        for seq in itertools.count():
            if self.stopping.is_set():
                break
            token = f"{name}-{seq}"
            with self.lock:
                self.sent.add(token)
            try:
                client = client or self._connect()
                client.sendmail("billing@acme.fr", [f"client+{token}@example.net"], _message(token))
                with self.lock:
                    self.acked.add(token)
            except (smtplib.SMTPException, OSError) as exc:
                with self.lock:
                    self.failures[str(getattr(exc, "smtp_code", type(exc).__name__))] += 1
                self._drop(client)
                client = None
        self._drop(client)

    def _connect(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        client.ehlo("app.test")
        return client

    def _drop(self, client: smtplib.SMTP | None) -> None:
        """Close the session; if the relay is down, wait until it listens again."""
        if client is not None:
            client.close()
        while not self.stopping.is_set() and not accepts_connections(self.port):
            self.stopping.wait(0.01)


@pytest.fixture
def upstream():
    fake = WatchedUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def serve(tmp_path, upstream, dkim_keys):
    """serve() starts `relay serve` on a fixed local port (the same after every restart)."""
    port = free_port()
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"hostname": "relay.test", "listeners": [
            {"name": "local", "address": "127.0.0.1", "port": port, "tls": "none"}]},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
        "spool": {"path": str(tmp_path / "spool"), "max_age": "1h",
                  "retry": {"initial": "0.2s", "max": "1s"}},
        "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}],
        "domains": {"acme.fr": {"route": "provider", "dkim": [
            {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])}]}},
        "routes": {"provider": {"host": "127.0.0.1", "port": upstream.port, "tls": "none",
                                "max_connections": 4, "timeout": "10s"}},
    }))
    started: list[RelayProcess] = []

    def start() -> RelayProcess:
        started.append(RelayProcess(path, port).start())
        return started[-1]
    yield start
    for process in started:
        process.kill_leftovers()


def _spool(spool_dir: Path, sql: str) -> list[tuple]:
    """Rows of `sql` on the spool, read straight from SQLite."""
    conn = sqlite3.connect(spool_dir / "relay.sqlite3")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _spooled(spool_dir: Path) -> frozenset[str]:
    """The tokens of the messages in the spool."""
    bodies = _spool(spool_dir, "SELECT body FROM messages")
    return frozenset(m.group(1).decode() for (body,) in bodies if (m := _TOKEN.search(body)))


def _kill(relay: RelayProcess, delivery: int, kind: Kill) -> float | None:
    """SIGKILL the victims of `kind` and wait until they are dead. For a listener alone,
    how long its orphaned delivery process took to finish its attempts and exit."""
    if kind is Kill.GROUP:
        relay.kill()
    elif kind is Kill.DELIVERY:
        os.kill(delivery, signal.SIGKILL)
    else:
        relay.kill_listener()
    killed = time.monotonic()
    wait_until(lambda: gone(delivery), timeout=ORPHAN_EXIT if kind is Kill.LISTENER else 10,
               what=f"delivery process {delivery} to exit after a {kind.value} kill")
    return time.monotonic() - killed if kind is Kill.LISTENER else None


def _record(kind: Kill, orphan_exit: float | None, upstream: WatchedUpstream,
            spool_dir: Path) -> KillRecord:
    """Once the provider has read everything the dead process sent, note what it received
    and what is still in the spool."""
    open_at_death = upstream.open_sessions()
    wait_until(lambda: not open_at_death & upstream.open_sessions(), timeout=10,
               what="the provider to see the dead delivery process's sessions end")
    arrived = upstream.count()
    spooled = _spooled(spool_dir)
    return KillRecord(kind, arrived, upstream.count(), spooled, orphan_exit)


def _cycle(relay: RelayProcess, kind: Kill, rng: random.Random, load: Load,
           upstream: WatchedUpstream, since: int, serve,
           spool_dir: Path) -> tuple[RelayProcess, KillRecord]:
    """One kill under load, and the relay back up. The kill waits until this relay both
    accepts and delivers (arrivals past `since`, the count once the last victims were dead):
    a delivery process still importing its modules has nothing in flight to lose."""
    acked = load.acked_count()
    wait_until(lambda: load.acked_count() >= acked + CLIENTS, timeout=30,
               what="the applications to get 250s from this relay")
    wait_until(lambda: upstream.count() > since, timeout=45,
               what="this relay's delivery process to deliver")
    delivery = wait_until(relay.delivery_pid, timeout=15, what="a delivery process")
    time.sleep(rng.uniform(*KILL_DELAY))        # the random moment: the point of the test
    record = _record(kind, _kill(relay, delivery, kind), upstream, spool_dir)
    if kind is Kill.DELIVERY:
        wait_until(lambda: relay.delivery_pid() not in (None, delivery), timeout=15,
                   what="the listener to start a new delivery process")
    else:
        relay = serve()
    return relay, record


def _in_flight(record: KillRecord, positions: dict[str, list[int]]) -> set[str]:
    """The messages that kill caught delivered but unrecorded: at the provider before the
    spool was read and still spooled, or (a new delivery process already running) sent
    again while the test looked."""
    return {t for t, p in positions.items() if p[0] < record.arrived
            and (t in record.spooled or any(record.arrived <= i < record.arrived_after for i in p))}


def _figures(seed: int, load: Load, arrivals: list[str], records: list[KillRecord]) -> dict:
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(arrivals):
        positions.setdefault(token, []).append(i)
    copies = {t: len(p) - 1 for t, p in positions.items() if len(p) > 1}
    caught = [_in_flight(r, positions) for r in records]
    return {
        "seed": seed, "submitted": len(load.sent), "acked": len(load.acked),
        "delivered": len(positions), "delivered_unacked": len(set(positions) - load.acked),
        "lost": sorted(load.acked - set(positions)),
        "duplicates": len(copies), "extra_copies": sum(copies.values()),
        "in_flight_at_kills": len(set().union(*caught)),
        # each extra copy needs its own kill that caught the message in flight
        "unexplained_copies": {t: n for t, n in copies.items()
                               if n > sum(t in c for c in caught)},
        "unknown_tokens": sorted(set(positions) - load.sent),
        "kills": dict(Counter(r.kind.value for r in records)),
        "in_flight_by_kill": [f"{r.kind.value}:{len(c)}" for r, c in zip(records, caught)],
        "orphan_exit_s": [round(r.orphan_exit, 2) for r in records if r.orphan_exit is not None],
        "client_failures": dict(load.failures),
    }


def test_crash_loop_loses_no_acked_message(tmp_path, serve, upstream, capsys):
    """Ten SIGKILLs (whole relay, listener, delivery process) under load: no acked message
    is lost, and duplicates are only messages in flight at a kill."""
    seed = int(os.environ.get("CRASH_LOOP_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    kinds = list(Kill) * (CYCLES // len(Kill)) + rng.choices(list(Kill), k=CYCLES % len(Kill))
    rng.shuffle(kinds)
    print(f"crash loop seed: {seed} (CRASH_LOOP_SEED={seed} replays the kill schedule)")
    spool_dir = tmp_path / "spool"
    started = time.monotonic()
    relay = serve()
    load = Load(relay.port)
    load.start()
    records: list[KillRecord] = []
    try:
        for kind in kinds:
            since = records[-1].arrived_after if records else 0
            relay, record = _cycle(relay, kind, rng, load, upstream, since, serve, spool_dir)
            records.append(record)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; seed {seed}, after kills {[r.kind.value for r in records]}, "
                             f"{upstream.count()} arrival(s)\n{relay.tail(60)}") from None
    finally:
        load.stop()
    drain = time.monotonic()
    wait_until(lambda: not _spool(spool_dir, "SELECT 1 FROM messages LIMIT 1")
               and not load.acked - set(upstream.arrivals()),
               timeout=DRAIN_DEADLINE, what=f"the spool to drain (seed {seed})")
    figures = _figures(seed, load, upstream.arrivals(), records)
    figures.update(drain_s=round(time.monotonic() - drain, 1),
                   runtime_s=round(time.monotonic() - started, 1))
    (tmp_path / "crash_loop.json").write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"\ncrash loop figures: {json.dumps(figures)}")
    assert figures["lost"] == [], figures
    assert figures["unexplained_copies"] == {}, figures
    assert figures["duplicates"] <= figures["in_flight_at_kills"], figures
    assert figures["unknown_tokens"] == [], figures
    assert relay.stop() == 0, relay.tail()
    # a listener's orphaned delivery process exits cleanly too: no traceback anywhere
    assert "Traceback" not in relay.log.read_text(errors="replace"), relay.tail(80)

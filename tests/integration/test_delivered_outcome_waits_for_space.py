"""A delivered message whose outcome cannot be written is never sent again.

The spool is on a real 16 MB tmpfs. Three messages are queued while the provider is down;
then something else fills the filesystem to the last byte while a reader (`relay queue
list`, a backup) holds a snapshot, so SQLite's log must grow to record anything. The provider
comes back and takes the messages, but relay cannot write that they were delivered
(`database or disk is full`): it retries that write, and its worker sends nothing else,
until space is back. Then each message was delivered exactly once and the spool is empty.
"""
from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.upstream import FakeUpstream
from tests.processes import free_port
from tests.tmpfs import fill, mounted


@pytest.fixture
def spool_fs(tmp_path):
    with mounted(tmp_path / "spool-fs", "16m") as directory:
        yield directory


def test_an_unwritable_outcome_is_retried_not_resent(make_relay, spool_fs, capfd):
    log = []                                       # the delivery process's stderr, so far

    def logged(text: str) -> bool:
        log.append(capfd.readouterr().err)
        return text in "".join(log)
    provider_port = free_port()                            # the provider is down
    relay = make_relay(**{"spool.path": str(spool_fs / "spool"), "spool.min_free": "1MB",
                          "routes.provider.port": provider_port})
    for n in range(3):
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"],
                      message(subject=f"invoice {n}", body="x" * 60_000)) == {}
    spool = relay.relay.spool
    wait_until(lambda: all(s.attempts >= 1 for s in spool.summaries()), timeout=10,
               what="a failed attempt of each message")

    reader = sqlite3.connect(spool.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM messages").fetchone()   # a snapshot: the log must grow
    filler = spool_fs / "filler"
    fill(filler)
    provider = FakeUpstream(port=provider_port).start()     # the provider comes back
    try:
        wait_until(lambda: logged("database or disk is full"), timeout=30,
                   what="a delivered outcome that the full disk refuses")
        sent_while_full = len(provider.messages)
        assert 1 <= sent_while_full <= 2          # one per worker (max_connections: 2), no more
        filler.unlink()                          # space is back
        reader.execute("COMMIT")
        reader.close()
        wait_until(lambda: spool.summaries() == [], timeout=30, what="the spool to empty")
        subjects = sorted(m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in provider.messages)
        assert subjects == [b"invoice 0", b"invoice 1", b"invoice 2"]      # each exactly once
        wait_until(lambda: logged("written at last"), timeout=10, what="the retry's success")
    finally:
        provider.stop()

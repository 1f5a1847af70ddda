"""Spool.release_held and release_rate_holds: mail held by a pause becomes due when the pause is lifted,
and the hold's unused time is taken back from the message's held time (held time never
counts toward spool.max_age, so an hour-long hold ended after a minute counts a minute)."""
from __future__ import annotations

import asyncio

import pytest

from relay.spool.db import connect
from relay.spool.store import Spool

NOW = 1_000_000.0


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path)
    spool.start()
    yield spool
    spool.close()


@pytest.fixture
def conn(spool):
    with connect(spool.path) as conn:
        yield conn


def put(conn, id_: str, domain: str, next_attempt: float, held: float, reason: str) -> None:
    conn.execute("INSERT INTO messages (id, created, mail_from, domain, route, next_attempt, body,"
                 " held, hold_reason) VALUES (?, 0, 'a@b', ?, 'r', ?, x'', ?, ?)",
                 (id_, domain, next_attempt, held, reason))


def row(conn, id_: str) -> tuple:
    return conn.execute("SELECT next_attempt, held, hold_reason FROM messages WHERE id = ?",
                        (id_,)).fetchone()


def test_a_lifted_pause_releases_its_mail_and_gives_back_the_unused_hold(spool, conn):
    put(conn, "p", "acme.fr", NOW + 3540, 3600, "paused")     # held an hour, a minute ago
    put(conn, "r", "acme.fr", NOW + 30, 30, "rate")            # held by the rate: stays
    put(conn, "o", "other.fr", NOW + 3000, 3600, "paused")     # another domain: stays
    assert asyncio.run(spool.release_held(NOW, {}, "acme.fr")) == 1
    assert row(conn, "p") == (NOW, 60, "")
    assert row(conn, "r") == (NOW + 30, 30, "rate")
    assert row(conn, "o") == (NOW + 3000, 3600, "paused")


def test_every_domain_at_start_except_those_still_paused_for_all_mail(spool, conn):
    put(conn, "a", "acme.fr", NOW + 100, 100, "paused")        # still paused (all): stays
    put(conn, "b", "bulk.fr", NOW + 100, 100, "paused")        # narrowed to bulk: released
    put(conn, "c", "calm.fr", NOW + 100, 100, "paused")        # resumed meanwhile: released
    released = asyncio.run(spool.release_held(NOW, {"acme.fr": ("all", "operator"),
                                                    "bulk.fr": ("bulk", "complaints")}))
    assert released == 2
    assert row(conn, "a") == (NOW + 100, 100, "paused")
    assert row(conn, "b") == (NOW, 0, "") and row(conn, "c") == (NOW, 0, "")


def test_mail_held_by_a_rate_is_released_with_its_unused_hold(spool, conn):
    put(conn, "r", "acme.fr", NOW + 600, 700, "rate")
    put(conn, "b", "acme.fr", NOW + 60, 60, "bulk_pacing")
    put(conn, "p", "acme.fr", NOW + 600, 600, "paused")        # a pause is not a rate
    put(conn, "o", "other.fr", NOW + 600, 600, "rate")
    assert asyncio.run(spool.release_rate_holds("acme.fr", NOW)) == 2
    assert row(conn, "r") == (NOW, 100, "") and row(conn, "b") == (NOW, 0, "")
    assert row(conn, "p") == (NOW + 600, 600, "paused")
    assert row(conn, "o") == (NOW + 600, 600, "rate")

"""relay.spool.store: messages the governor holds.

A hold moves `next_attempt` and adds to `held` (time that never counts toward
`spool.max_age`) without counting as an attempt; an attempt whose other recipients the
governor did not grant holds them for its reason; `relay queue retry` cuts a hold short and
gives its unused time back; a spool written before the governor gains the `held` and
`hold_reason` columns when it is opened.
"""
from __future__ import annotations

import asyncio
import sqlite3

from relay.model import QueuedMessage, Recipient, RecipientState
from relay.spool.store import Spool

DAY = 86400
TODAY = 20_000
T = TODAY * DAY + 10 * 3600          # 10:00 UTC


def msg(id: str, *addresses: str, attempts: int = 0, next_attempt: float = 0.0) -> QueuedMessage:
    return QueuedMessage(id=id, mail_from="billing@acme.fr",
                         recipients=[Recipient(a) for a in (addresses or ("b@x.fr",))],
                         domain="acme.fr", route="provider", body=b"Subject: hi\r\n\r\nhi\r\n",
                         created=T - 60, attempts=attempts, next_attempt=next_attempt)


def delivered(m: QueuedMessage) -> QueuedMessage:
    for r in m.recipients:
        r.state, r.reply = RecipientState.DELIVERED, "250 2.0.0 Ok"
    m.attempts += 1
    return m


def run(coro):
    return asyncio.run(coro)


def test_a_hold_persists_next_attempt_and_held_and_is_not_an_attempt(spool):
    """record_hold writes next_attempt and held only: attempts and recipient states stay as
    they were in the spool, whatever the message in memory says."""
    async def scenario():
        m = msg("Q1", attempts=2, next_attempt=T)
        await spool.enqueue(m)
        m.next_attempt, m.held = T + DAY, 50_400.0
        m.attempts = 99                                   # not what a hold writes
        m.recipients[0].state = RecipientState.DELIVERED  # nor this
        await spool.record_hold(m, "rate")
        return await spool.load("Q1")
    loaded = run(scenario())
    assert (loaded.next_attempt, loaded.held) == (T + DAY, 50_400.0)
    assert loaded.attempts == 2
    assert loaded.recipients[0].state is RecipientState.QUEUED
    [summary] = spool.summaries()
    assert (summary.attempts, summary.next_attempt, summary.pending) == (2, T + DAY, 1)
    assert spool.queued_by_domain() == {"acme.fr": (1, T + DAY)}


def test_held_time_accumulates_over_holds(spool):
    """Each hold writes the message's running total; the last one is what loads."""
    async def scenario():
        m = msg("Q1", next_attempt=T)
        await spool.enqueue(m)
        for until, held in ((T + 60, 60.0), (T + 3600, 3600.0)):
            m.next_attempt, m.held = until, held
            await spool.record_hold(m, "rate")
        return await spool.load("Q1")
    loaded = run(scenario())
    assert (loaded.next_attempt, loaded.held, loaded.attempts) == (T + 3600, 3600.0, 0)


def test_a_new_message_is_not_held(spool):
    """Enqueued mail starts with held == 0 and no hold."""
    async def scenario():
        await spool.enqueue(msg("Q1"))
        return await spool.load("Q1")
    assert run(scenario()).held == 0.0
    assert spool.queued_by_domain() == {"acme.fr": (1, None)}


def test_an_attempt_holds_the_recipients_the_governor_did_not_grant(spool):
    """record_attempt(..., hold_reason="warmup") persists the attempt and holds the message
    until next_attempt for that reason; the next attempt, with no reason, holds nothing."""
    async def scenario():
        m = msg("Q1", "a@x.fr", "b@x.fr", next_attempt=T)
        await spool.enqueue(m)
        m.recipients[0].state, m.recipients[0].reply = RecipientState.DELIVERED, "250 2.0.0 Ok"
        m.attempts, m.next_attempt, m.held = 1, T + DAY, float(DAY)
        await spool.record_attempt(m, hold_reason="warmup")
        held = await spool.load("Q1"), spool.queued_by_domain()
        m.attempts, m.next_attempt = 2, T + DAY + 300
        m.recipients[1].reply = "451 4.3.0 try again"
        await spool.record_attempt(m)
        return held, spool.queued_by_domain()
    (loaded, while_held), after = run(scenario())
    assert (loaded.attempts, loaded.next_attempt, loaded.held) == (1, T + DAY, float(DAY))
    assert [r.state for r in loaded.recipients] == [RecipientState.DELIVERED, RecipientState.QUEUED]
    assert while_held == {"acme.fr": (1, T + DAY)}
    assert after == {"acme.fr": (1, None)}


def test_queue_retry_cuts_a_hold_short_and_gives_its_unused_time_back(spool):
    """`relay queue retry` of a message held for a day, an hour into the hold: it is due at
    once, no longer held, and only the hour it waited counts as held time."""
    async def scenario():
        m = msg("Q1", next_attempt=T)
        await spool.enqueue(m)
        m.next_attempt, m.held = T + DAY, float(DAY)
        await spool.record_hold(m, "paused")
    run(scenario())
    assert spool.retry_now("Q1", now=T + 3600)
    loaded = run(spool.load("Q1"))
    assert (loaded.next_attempt, loaded.held) == (0, 3600.0)
    assert spool.retry_now("Q1", now=T + 7200)                  # not held now: nothing back
    assert run(spool.load("Q1")).held == 3600.0


OLD_MESSAGES = """
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    mail_from TEXT NOT NULL,
    domain TEXT NOT NULL,
    route TEXT NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    mail_options TEXT NOT NULL DEFAULT '[]',
    body BLOB NOT NULL
);
CREATE INDEX messages_due ON messages (stream, next_attempt);
CREATE TABLE recipients (
    message_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    reply TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
"""


def test_a_spool_from_before_the_governor_is_upgraded_when_opened(tmp_path):
    """A database whose `messages` table has no `held` or `hold_reason` column gains them
    when Spool opens it; its queued mail loads with held == 0 and can be held, and new mail
    goes through as before; opening it again changes nothing."""
    directory = tmp_path / "spool"
    directory.mkdir()
    with sqlite3.connect(directory / "relay.sqlite3") as conn:
        conn.executescript(OLD_MESSAGES)
        conn.execute("INSERT INTO messages (id, created, mail_from, domain, route, attempts,"
                     " next_attempt, body) VALUES ('OLD1', ?, 'billing@acme.fr', 'acme.fr',"
                     " 'provider', 3, ?, x'4869')", (T - 600, T))
        conn.execute("INSERT INTO recipients (message_id, idx, address, state)"
                     " VALUES ('OLD1', 0, 'b@x.fr', 'queued')")
    conn.close()

    spool = Spool(directory)
    spool.start()
    try:
        with sqlite3.connect(spool.path) as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        conn.close()
        assert {"held", "hold_reason"} <= columns

        async def scenario():
            old = await spool.load("OLD1")
            held_before = old.held
            old.next_attempt, old.held = T + DAY, 1234.0
            await spool.record_hold(old, "rate")
            new = msg("NEW1")
            await spool.enqueue(new)
            await spool.record_attempt(delivered(new))
            return held_before, await spool.load("OLD1"), await spool.load("NEW1")
        held_before, old, new = run(scenario())
        assert held_before == 0.0
        assert (old.attempts, old.next_attempt, old.held, old.body) == (3, T + DAY, 1234.0, b"Hi")
        assert new is None                              # delivered: it left the spool
        assert spool.queued_by_domain() == {"acme.fr": (1, T + DAY)}
    finally:
        spool.close()
    again = Spool(directory)
    try:
        assert again.get("OLD1").held == 1234.0
    finally:
        again.close()

"""relay.spool.store: the governor's state rides in the spool database.

Deliveries are added to the domain's daily volume in the same transaction as the outcome
that produced them, the first delivery of a domain is remembered (the start of its warm-up),
holds move `next_attempt` and add to `held` without counting as attempts, and a spool
written before the governor existed gains the `held` column when it is opened.
"""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from relay.model import QueuedMessage, Recipient, RecipientState
from relay.spool.store import Spool

DAY = 86400
TODAY = 20_000
T = TODAY * DAY + 10 * 3600          # 10:00 UTC


def msg(id: str, *addresses: str, domain: str = "acme.fr", attempts: int = 0,
        next_attempt: float = 0.0) -> QueuedMessage:
    return QueuedMessage(id=id, mail_from="billing@acme.fr",
                         recipients=[Recipient(a) for a in (addresses or ("b@x.fr",))],
                         domain=domain, route="provider", body=b"Subject: hi\r\n\r\nhi\r\n",
                         created=T - 60, attempts=attempts, next_attempt=next_attempt)


def delivered(m: QueuedMessage) -> QueuedMessage:
    for r in m.recipients:
        r.state, r.reply = RecipientState.DELIVERED, "250 2.0.0 Ok"
    m.attempts += 1
    return m


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    yield spool
    spool.close()


def run(coro):
    return asyncio.run(coro)


def test_a_new_spool_has_no_governance_state(spool):
    """Nothing delivered yet: no first sends and no volumes."""
    assert run(spool.governance_state(0)) == ({}, {})


def test_delivered_recipients_are_added_to_the_days_volume(spool):
    """record_attempt(..., delivered=3, now=T) counts 3 for acme.fr on T's UTC day and makes
    T its first send; the message itself leaves the spool as before."""
    async def scenario():
        m = msg("Q1", "a@x.fr", "b@x.fr", "c@x.fr")
        await spool.enqueue(m)
        await spool.record_attempt(delivered(m), delivered=3, now=T)
        return await spool.governance_state(TODAY - 8)
    assert run(scenario()) == ({"acme.fr": T}, {("acme.fr", TODAY): 3})
    assert spool.summaries() == []


def test_volumes_add_up_per_utc_day_and_first_send_is_set_once(spool):
    """Later deliveries add to their own day; the first send stays the first delivery's time."""
    async def scenario():
        for i, (count, now) in enumerate([(3, T), (2, T + 3600), (4, T + DAY), (1, T + 2 * DAY)]):
            m = msg(f"Q{i}", *[f"r{n}@x.fr" for n in range(count)])
            await spool.enqueue(m)
            await spool.record_attempt(delivered(m), delivered=count, now=now)
        return await spool.governance_state(TODAY - 8)
    first, volumes = run(scenario())
    assert first == {"acme.fr": T}
    assert volumes == {("acme.fr", TODAY): 5, ("acme.fr", TODAY + 1): 4, ("acme.fr", TODAY + 2): 1}


def test_first_send_is_the_earliest_delivery_even_if_recorded_later(spool):
    """Two workers may persist their outcomes out of order: the first send is still the
    earliest delivery time, not the first one written."""
    async def scenario():
        late, early = msg("late"), msg("early")
        await spool.enqueue(late)
        await spool.enqueue(early)
        await spool.record_attempt(delivered(late), delivered=1, now=T + 5)
        await spool.record_attempt(delivered(early), delivered=1, now=T)
        return await spool.governance_state(TODAY)
    first, volumes = run(scenario())
    assert first == {"acme.fr": T}
    assert volumes == {("acme.fr", TODAY): 2}


def test_domains_are_counted_apart(spool):
    """Each sender domain has its own volumes and first send."""
    async def scenario():
        a, b = msg("A", domain="acme.fr"), msg("B", "x@y.fr", "z@y.fr", domain="other.fr")
        await spool.enqueue(a)
        await spool.enqueue(b)
        await spool.record_attempt(delivered(a), delivered=1, now=T)
        await spool.record_attempt(delivered(b), delivered=2, now=T + 1)
        return await spool.governance_state(TODAY)
    assert run(scenario()) == ({"acme.fr": T, "other.fr": T + 1},
                               {("acme.fr", TODAY): 1, ("other.fr", TODAY): 2})


def test_an_attempt_that_delivered_nothing_counts_nothing(spool):
    """A deferral (delivered=0) records the attempt but neither a volume nor a first send."""
    async def scenario():
        m = msg("Q1")
        await spool.enqueue(m)
        m.attempts, m.next_attempt = 1, T + 300
        m.recipients[0].reply = "451 4.3.0 try again"
        await spool.record_attempt(m, delivered=0, now=T)
        return await spool.governance_state(0), await spool.load("Q1")
    state, loaded = run(scenario())
    assert state == ({}, {})
    assert (loaded.attempts, loaded.next_attempt) == (1, T + 300)


def test_governance_state_returns_the_days_since_the_day_given(spool):
    """Volumes before `since_day` are left out; first sends are always returned."""
    async def scenario():
        for i, day in enumerate(range(TODAY - 10, TODAY + 1)):
            m = msg(f"Q{i}")
            await spool.enqueue(m)
            await spool.record_attempt(delivered(m), delivered=1, now=day * DAY + 60)
        return await spool.governance_state(TODAY - 2)
    first, volumes = run(scenario())
    assert first == {"acme.fr": (TODAY - 10) * DAY + 60}
    assert volumes == {("acme.fr", d): 1 for d in (TODAY - 2, TODAY - 1, TODAY)}


def test_volumes_survive_reopening_the_spool(spool, tmp_path):
    """What was persisted is what a restarted delivery process loads."""
    async def scenario():
        m = msg("Q1", "a@x.fr", "b@x.fr")
        await spool.enqueue(m)
        await spool.record_attempt(delivered(m), delivered=2, now=T)
    run(scenario())
    spool.close()
    reopened = Spool(tmp_path / "spool")
    reopened.start()
    try:
        assert run(reopened.governance_state(TODAY)) == ({"acme.fr": T}, {("acme.fr", TODAY): 2})
    finally:
        reopened.close()


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
    assert run(spool.governance_state(0)) == ({}, {})


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
    """Enqueued mail starts with held == 0."""
    async def scenario():
        await spool.enqueue(msg("Q1"))
        return await spool.load("Q1")
    assert run(scenario()).held == 0.0


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
    """A database whose `messages` table has no `held` column (and no governance tables)
    gains them when Spool opens it; its queued mail loads with held == 0 and can be held."""
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
        assert "held" in columns

        async def scenario():
            old = await spool.load("OLD1")
            held_before = old.held
            old.next_attempt, old.held = T + DAY, 1234.0
            await spool.record_hold(old, "rate")
            new = msg("NEW1")
            await spool.enqueue(new)
            await spool.record_attempt(delivered(new), delivered=1, now=T)
            return held_before, await spool.load("OLD1"), await spool.governance_state(TODAY)
        held_before, old, state = run(scenario())
        assert held_before == 0.0
        assert (old.attempts, old.next_attempt, old.held, old.body) == (3, T + DAY, 1234.0, b"Hi")
        assert state == ({"acme.fr": T}, {("acme.fr", TODAY): 1})
    finally:
        spool.close()
    Spool(directory).close()                # opening an upgraded spool again changes nothing


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

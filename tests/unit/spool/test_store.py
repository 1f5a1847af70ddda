"""relay.spool.store: durable messages and per-recipient state in SQLite, group-committed."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from relay.model import QueuedMessage, Recipient, RecipientState, Stream
from relay.spool.store import Due, Spool

BODY = (b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nFrom: a@acme.fr\r\n\r\n"
        b"8-bit \xff\x00\xc3\xa9 and a lone \r and \n\r\n.\r\n")


def msg(id: str, *addresses: str, stream: Stream = Stream.TRANSACTIONAL, next_attempt: float = 0.0,
        created: float = 1000.0, body: bytes = BODY) -> QueuedMessage:
    return QueuedMessage(id=id, mail_from="a@acme.fr",
                         recipients=[Recipient(a) for a in (addresses or ("b@x.fr",))],
                         domain="acme.fr", route="brevo", body=body, created=created,
                         next_attempt=next_attempt, stream=stream,
                         mail_options=["BODY=8BITMIME", "SMTPUTF8"])


def run(coro):
    return asyncio.run(coro)


def test_enqueue_then_load_round_trips_exactly(spool):
    """Everything enqueued comes back: envelope, options, stream and the exact body bytes."""
    original = msg("Q1", "b@x.fr", "c@y.fr", stream=Stream.BULK, next_attempt=5.5)

    async def scenario():
        await spool.enqueue(original)
        return await spool.load("Q1")
    loaded = run(scenario())
    assert loaded == original
    assert loaded.body == BODY and isinstance(loaded.body, bytes)
    assert loaded.stream is Stream.BULK
    assert [r.state for r in loaded.recipients] == [RecipientState.QUEUED] * 2


def test_load_of_an_unknown_id(spool):
    """Loading an id that is not in the spool gives None."""
    assert run(spool.load("nope")) is None


def test_enqueued_message_is_visible_to_another_connection(spool):
    """Once enqueue returns, the message is committed: a fresh connection sees it."""
    run(spool.enqueue(msg("Q1")))
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT id FROM messages").fetchall() == [("Q1",)]
        assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone() == (1,)


def test_duplicate_id_fails_alone(spool):
    """A failing write raises to its caller and does not take concurrent writes down."""
    async def scenario():
        await spool.enqueue(msg("Q1"))
        return await asyncio.gather(spool.enqueue(msg("Q1")), spool.enqueue(msg("Q2")),
                                    return_exceptions=True)
    dup, ok = run(scenario())
    assert isinstance(dup, sqlite3.IntegrityError)
    assert ok is None
    assert {s.id for s in spool.summaries()} == {"Q1", "Q2"}


def test_due_orders_transactional_first_then_by_next_attempt(spool):
    """Due messages come stream 0 before stream 1, each by next_attempt; not-yet-due ones
    are left out, and `limit` bounds the list."""
    async def scenario():
        for m in (msg("bulk-early", stream=Stream.BULK, next_attempt=1),
                  msg("tx-late", next_attempt=50),
                  msg("tx-early", next_attempt=10),
                  msg("bulk-late", stream=Stream.BULK, next_attempt=40),
                  msg("tx-future", next_attempt=1000)):
            await spool.enqueue(m)
        return (await spool.due(now=100, limit=10), await spool.due(now=100, limit=3),
                await spool.next_due_time())
    due, limited, next_time = run(scenario())
    assert [d.id for d in due] == ["tx-early", "tx-late", "bulk-early", "bulk-late"]
    assert due[0] == Due("tx-early", "brevo", Stream.TRANSACTIONAL)
    assert due[2].stream is Stream.BULK
    assert [d.id for d in limited] == ["tx-early", "tx-late", "bulk-early"]
    assert next_time == 1


def test_empty_spool_has_nothing_due(spool):
    """An empty spool has no due messages and no next due time."""
    async def scenario():
        return await spool.due(now=1e12, limit=10), await spool.next_due_time()
    assert run(scenario()) == ([], None)


def test_record_attempt_persists_recipient_states(spool):
    """After an attempt, attempts, next_attempt and each recipient's state and reply are stored."""
    async def scenario():
        m = msg("Q1", "a@x.fr", "b@x.fr", "c@x.fr")
        await spool.enqueue(m)
        m.attempts, m.next_attempt = 1, 500.0
        m.recipients[0].state, m.recipients[0].reply = RecipientState.DELIVERED, "250 2.0.0 ok"
        m.recipients[1].state, m.recipients[1].reply = RecipientState.BOUNCED, "550 5.1.1 unknown"
        m.recipients[2].reply = "451 4.3.0 later"
        await spool.record_attempt(m)
        return await spool.load("Q1")
    loaded = run(scenario())
    assert (loaded.attempts, loaded.next_attempt) == (1, 500.0)
    assert [(r.state, r.reply) for r in loaded.recipients] == [
        (RecipientState.DELIVERED, "250 2.0.0 ok"),
        (RecipientState.BOUNCED, "550 5.1.1 unknown"),
        (RecipientState.QUEUED, "451 4.3.0 later")]
    assert [r.address for r in loaded.pending()] == ["c@x.fr"]


def test_record_attempt_deletes_the_message_when_all_recipients_are_final(spool):
    """Once no recipient is pending, the message and its recipients leave the spool."""
    async def scenario():
        m = msg("Q1", "a@x.fr", "b@x.fr")
        await spool.enqueue(m)
        m.recipients[0].state = RecipientState.DELIVERED
        m.recipients[1].state = RecipientState.EXPIRED
        await spool.record_attempt(m)
        return await spool.load("Q1"), await spool.due(now=1e12, limit=10)
    assert run(scenario()) == (None, [])
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone() == (0,)


def test_record_attempt_with_a_dsn_inserts_it(spool):
    """The DSN produced by an attempt is stored in the same write as the attempt."""
    async def scenario():
        m = msg("Q1", "a@x.fr")
        await spool.enqueue(m)
        m.recipients[0].state = RecipientState.BOUNCED
        dsn = msg("Q1-dsn", "a@acme.fr", body=b"From: mailer-daemon@acme.fr\r\n\r\nDSN\r\n")
        dsn.mail_from = ""
        await spool.record_attempt(m, also_enqueue=[dsn])
        return await spool.load("Q1"), await spool.load("Q1-dsn")
    original, dsn = run(scenario())
    assert original is None
    assert dsn.mail_from == "" and dsn.body.endswith(b"DSN\r\n")


def test_record_attempt_and_dsn_are_atomic(spool):
    """If the DSN cannot be stored, the attempt's outcome is not stored either: a crash or
    error never loses the bounce while marking the recipient final."""
    async def scenario():
        await spool.enqueue(msg("taken"))
        m = msg("Q1", "a@x.fr")
        await spool.enqueue(m)
        m.attempts = 3
        m.recipients[0].state = RecipientState.BOUNCED
        with pytest.raises(sqlite3.IntegrityError):
            await spool.record_attempt(m, also_enqueue=[msg("taken")])
        return await spool.load("Q1")
    loaded = run(scenario())
    assert loaded is not None
    assert loaded.attempts == 0
    assert loaded.recipients[0].state is RecipientState.QUEUED


def test_sync_api_summaries_get_retry_now_delete(spool):
    """The CLI's synchronous calls list, show, reschedule and delete messages."""
    async def fill():
        await spool.enqueue(msg("old", "a@x.fr", "b@x.fr", next_attempt=900, created=1.0))
        await spool.enqueue(msg("new", "c@x.fr", next_attempt=800, created=2.0, body=b"x" * 10))
        m = await spool.load("old")
        m.recipients[0].state = RecipientState.DELIVERED
        m.attempts = 2
        await spool.record_attempt(m)
    run(fill())

    summaries = spool.summaries()
    assert [s.id for s in summaries] == ["old", "new"]          # oldest first
    old, new = summaries
    assert (old.pending, old.attempts, old.size, old.mail_from) == (1, 2, len(BODY), "a@acme.fr")
    assert (new.pending, new.size, new.domain, new.route) == (1, 10, "acme.fr", "brevo")

    assert spool.get("new").recipients == [Recipient("c@x.fr")]
    assert spool.get("missing") is None

    assert spool.retry_now("old") is True
    assert spool.get("old").next_attempt == 0
    assert spool.retry_now("missing") is False

    assert spool.delete("new") is True
    assert spool.get("new") is None
    assert spool.delete("new") is False
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM recipients WHERE message_id = 'new'").fetchone() == (0,)
    assert [s.id for s in spool.summaries()] == ["old"]


def test_sync_changes_are_seen_by_the_async_api(spool):
    """A retry_now from the CLI makes the message due for the running relay."""
    run(spool.enqueue(msg("Q1", next_attempt=10_000)))
    assert run(spool.due(now=100, limit=10)) == []
    spool.retry_now("Q1")
    assert [d.id for d in run(spool.due(now=100, limit=10))] == ["Q1"]


def test_many_concurrent_enqueues_are_all_committed(spool):
    """200 sessions enqueueing at once all get their commit (group commit batches them)."""
    async def scenario():
        results = await asyncio.gather(*(spool.enqueue(msg(f"M{i:03}", f"r{i}@x.fr", body=b"%d" % i))
                                         for i in range(200)))
        return results, await spool.load("M137")
    results, loaded = run(scenario())
    assert results == [None] * 200
    assert loaded.body == b"137" and loaded.recipients[0].address == "r137@x.fr"
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (200,)
        assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone() == (200,)


def test_spool_survives_reopening(tmp_path):
    """A message enqueued before close is still there after reopening the directory."""
    first = Spool(tmp_path)
    first.start()
    run(first.enqueue(msg("Q1")))
    first.close()
    second = Spool(tmp_path)
    try:
        assert second.get("Q1") == msg("Q1")
    finally:
        second.close()


def test_database_uses_wal(spool):
    """The spool database is in WAL mode, so readers proceed during writes."""
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

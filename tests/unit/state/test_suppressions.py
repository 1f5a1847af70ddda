"""relay.state.suppressions: the per-sender-domain suppression list in the spool database."""
from __future__ import annotations

import pytest

from relay.spool.db import connect
from relay.state import suppressions
from relay.state.suppressions import SuppressionReason


@pytest.fixture
def conn(tmp_path):
    conn = connect(tmp_path / "spool.db")
    conn.executescript(suppressions.SCHEMA)
    yield conn
    conn.close()


def test_a_suppressed_recipient_is_found_with_its_reason(conn):
    assert suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 100.0)
    assert suppressions.lookup(conn, "a@x.net", "acme.fr") is SuppressionReason.UNSUBSCRIBED


def test_a_suppression_is_per_sender_domain(conn):
    """Unsubscribing from acme.fr does not stop mail from other.fr."""
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 100.0)
    assert suppressions.lookup(conn, "a@x.net", "other.fr") is None
    assert suppressions.lookup(conn, "b@x.net", "acme.fr") is None


def test_suppressing_again_is_idempotent_and_keeps_the_first_entry(conn):
    """A second unsubscribe or a later complaint keeps the original reason and `since`."""
    assert suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 100.0)
    assert not suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 200.0)
    assert not suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.COMPLAINT, 300.0)
    assert suppressions.entries(conn) == [("a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 100.0)]


def test_addresses_and_domains_are_case_insensitive(conn):
    """Stored lower-cased; any spelling finds and removes the entry."""
    suppressions.suppress(conn, "Jeanne@Example.NET", "ACME.fr", SuppressionReason.HARD_BOUNCE, 1.0)
    assert suppressions.lookup(conn, "jeanne@example.net", "acme.fr") is SuppressionReason.HARD_BOUNCE
    assert suppressions.lookup(conn, "JEANNE@EXAMPLE.NET", "Acme.Fr") is SuppressionReason.HARD_BOUNCE
    assert suppressions.entries(conn, "Acme.FR") == [
        ("jeanne@example.net", "acme.fr", SuppressionReason.HARD_BOUNCE, 1.0)]
    assert suppressions.remove(conn, "JEANNE@example.net", "acme.FR")


def test_remove_lifts_a_suppression_and_says_whether_there_was_one(conn):
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.MANUAL, 1.0)
    assert suppressions.remove(conn, "a@x.net", "acme.fr") is True
    assert suppressions.lookup(conn, "a@x.net", "acme.fr") is None
    assert suppressions.remove(conn, "a@x.net", "acme.fr") is False


def test_after_removal_a_new_suppression_starts_afresh(conn):
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.MANUAL, 1.0)
    suppressions.remove(conn, "a@x.net", "acme.fr")
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.COMPLAINT, 9.0)
    assert suppressions.entries(conn) == [("a@x.net", "acme.fr", SuppressionReason.COMPLAINT, 9.0)]


def test_entries_lists_all_or_one_domain_in_order(conn):
    suppressions.suppress(conn, "z@x.net", "acme.fr", SuppressionReason.COMPLAINT, 3.0)
    suppressions.suppress(conn, "a@x.net", "other.fr", SuppressionReason.HARD_BOUNCE, 2.0)
    suppressions.suppress(conn, "b@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 1.0)
    assert suppressions.entries(conn) == [
        ("b@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 1.0),
        ("z@x.net", "acme.fr", SuppressionReason.COMPLAINT, 3.0),
        ("a@x.net", "other.fr", SuppressionReason.HARD_BOUNCE, 2.0),
    ]
    assert [e[0] for e in suppressions.entries(conn, "acme.fr")] == ["b@x.net", "z@x.net"]
    assert suppressions.entries(conn, "nobody.fr") == []


def test_reasons_are_a_closed_set(conn):
    """The four reasons are stored by value; anything else is refused before touching the table."""
    assert {r.value for r in SuppressionReason} == {"unsubscribed", "hard_bounce", "complaint", "manual",
                                                     "soft_bounces"}
    assert suppressions.suppress(conn, "a@x.net", "acme.fr", "complaint", 1.0)
    assert suppressions.lookup(conn, "a@x.net", "acme.fr") is SuppressionReason.COMPLAINT
    with pytest.raises(ValueError):
        suppressions.suppress(conn, "b@x.net", "acme.fr", "spam", 1.0)
    assert suppressions.lookup(conn, "b@x.net", "acme.fr") is None


def test_suppressions_survive_reopening_the_database(tmp_path, conn):
    """Written to the database file, not held in memory."""
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.UNSUBSCRIBED, 5.0)
    conn.close()
    reopened = connect(tmp_path / "spool.db")
    reopened.executescript(suppressions.SCHEMA)    # applying the schema again is harmless
    assert suppressions.lookup(reopened, "a@x.net", "acme.fr") is SuppressionReason.UNSUBSCRIBED
    reopened.close()


def test_a_rolled_back_suppression_is_not_kept(conn):
    """The caller owns the transaction: a suppression commits or rolls back with its cause."""
    conn.execute("BEGIN")
    suppressions.suppress(conn, "a@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE, 5.0)
    conn.execute("ROLLBACK")
    assert suppressions.lookup(conn, "a@x.net", "acme.fr") is None

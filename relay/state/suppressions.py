"""The suppression list in the spool's SQLite database: who must not be mailed, per sender domain.

    suppressions (recipient, domain, reason, since)   one row per (recipient, sender domain)

A row says "do not send mail from `domain` to `recipient`" (DESIGN "Acceptance" step 4 refuses
it at RCPT TO). The first reason and time are kept: later unsubscribes, bounces or
complaints for a pair already suppressed change nothing, so `since` is when mail stopped.
Addresses and domains are stored lower-cased and compared that way.

These functions run on the caller's connection and inside the caller's transaction, like
`relay.state.sqlite`, so a suppression can commit together with what caused it. Every change
to the table moves its change counter (triggers, `relay/spool/changes.py`), which tells the
listener's copy of the list in memory (`suppression_filter.py`) that it must be made again.
"""
from __future__ import annotations

import enum
import sqlite3

from relay.spool import changes

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    recipient TEXT NOT NULL,
    domain TEXT NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (recipient, domain)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS suppressions_by_domain ON suppressions (domain);
""" + changes.triggers("suppressions")     # the listener's copy (`suppression_filter.py`)


class SuppressionReason(enum.StrEnum):
    """Why a recipient is suppressed; the RCPT TO reply depends on it (DESIGN step 4)."""
    UNSUBSCRIBED = "unsubscribed"   # RFC 8058 one-click POST, or the provider's unsubscribe event
    HARD_BOUNCE = "hard_bounce"     # 5.1.x bad address or 5.2.1 disabled (RFC 3463)
    COMPLAINT = "complaint"         # ARF abuse report (RFC 5965) or the provider's spam event
    MANUAL = "manual"               # `relay suppressions add`
    SOFT_BOUNCES = "soft_bounces"   # feedback.soft_bounces.count soft bounces within .within


Entry = tuple[str, str, SuppressionReason, float]   # (recipient, domain, reason, since)


def suppress(conn: sqlite3.Connection, recipient: str, domain: str,
             reason: SuppressionReason | str, now: float) -> bool:
    """Suppress `recipient` for `domain`; True if newly suppressed, False if it already was."""
    reason = SuppressionReason(reason)   # a reason outside the enum is a programming error
    cursor = conn.execute(
        "INSERT INTO suppressions (recipient, domain, reason, since) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (recipient, domain) DO NOTHING",
        (normalized(recipient), normalized(domain), reason.value, now))
    return cursor.rowcount > 0


def lookup(conn: sqlite3.Connection, recipient: str, domain: str) -> SuppressionReason | None:
    """Why `recipient` is suppressed for `domain`, or None if mail may go."""
    row = conn.execute("SELECT reason FROM suppressions WHERE recipient = ? AND domain = ?",
                       (normalized(recipient), normalized(domain))).fetchone()
    return SuppressionReason(row[0]) if row else None


def remove(conn: sqlite3.Connection, recipient: str, domain: str) -> bool:
    """Lift a suppression; True if there was one."""
    return conn.execute("DELETE FROM suppressions WHERE recipient = ? AND domain = ?",
                        (normalized(recipient), normalized(domain))).rowcount > 0


def entries(conn: sqlite3.Connection, domain: str | None = None) -> list[Entry]:
    """Every suppression (or those of one sender domain), ordered by domain then recipient."""
    query = "SELECT recipient, domain, reason, since FROM suppressions"
    params: tuple[str, ...] = ()
    if domain is not None:
        query, params = query + " WHERE domain = ?", (normalized(domain),)
    rows = conn.execute(query + " ORDER BY domain, recipient", params)
    return [(recipient, d, SuppressionReason(reason), since) for recipient, d, reason, since in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many suppressions there are, by reason."""
    return dict(conn.execute("SELECT reason, COUNT(*) FROM suppressions GROUP BY reason"))


def normalized(value: str) -> str:
    """An address or domain as stored and compared: stripped, lower case."""
    return value.strip().lower()

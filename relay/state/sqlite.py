"""Governance state in the spool's SQLite database: the tables, and the writes that ride in
the same transaction as the delivery outcome they count (so a crash cannot count a delivery
that was not recorded, nor record one that was not counted).

    domain_days   (domain, day, delivered)   recipients delivered per UTC day
    domain_state  (domain, first_send)       when relay first delivered for the domain
    domain_pauses (domain, since, reason)    domains whose mail waits (`relay domains pause`)
    campaign_buckets (campaign, bucket, recipients)   mass-send detection counts
"""
from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS domain_days (
    domain TEXT NOT NULL,
    day INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domain_state (
    domain TEXT PRIMARY KEY,
    first_send REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS campaign_buckets (
    campaign TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (campaign, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domain_pauses (
    domain TEXT PRIMARY KEY,
    since REAL NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
"""

DAY = 86400


def day_of(ts: float) -> int:
    """The UTC day number of a timestamp."""
    return int(ts // DAY)


def add_deliveries(conn: sqlite3.Connection, domain: str, count: int, now: float) -> None:
    conn.execute("INSERT INTO domain_days (domain, day, delivered) VALUES (?, ?, ?)"
                 " ON CONFLICT (domain, day) DO UPDATE SET delivered = delivered + excluded.delivered",
                 (domain, day_of(now), count))
    conn.execute("INSERT INTO domain_state (domain, first_send) VALUES (?, ?) ON CONFLICT (domain)"
                 " DO UPDATE SET first_send = MIN(first_send, excluded.first_send)", (domain, now))


def load(conn: sqlite3.Connection, since_day: int) -> tuple[dict[str, float], dict[tuple[str, int], int]]:
    """(first send per domain, delivered per (domain, day) since `since_day`)."""
    first = dict(conn.execute("SELECT domain, first_send FROM domain_state"))
    volumes = {(d, day): n for d, day, n in conn.execute(
        "SELECT domain, day, delivered FROM domain_days WHERE day >= ?", (since_day,))}
    return first, volumes


def paused(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT domain, reason FROM domain_pauses"))


def pause(conn: sqlite3.Connection, domain: str, reason: str, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO domain_pauses (domain, since, reason) VALUES (?, ?, ?)",
                 (domain, now, reason))


def resume(conn: sqlite3.Connection, domain: str) -> bool:
    return conn.execute("DELETE FROM domain_pauses WHERE domain = ?", (domain,)).rowcount > 0


def count_campaign(conn: sqlite3.Connection, campaign: str, bucket: int, recipients: int) -> None:
    conn.execute("INSERT INTO campaign_buckets (campaign, bucket, recipients) VALUES (?, ?, ?)"
                 " ON CONFLICT (campaign, bucket) DO UPDATE SET recipients = recipients + excluded.recipients",
                 (campaign, bucket, recipients))


def campaign_buckets(conn: sqlite3.Connection, since_bucket: int) -> dict[str, list[tuple[int, int]]]:
    """The live buckets, by campaign; older ones are deleted on the way."""
    conn.execute("DELETE FROM campaign_buckets WHERE bucket < ?", (since_bucket,))
    out: dict[str, list[tuple[int, int]]] = {}
    for campaign, bucket, n in conn.execute(
            "SELECT campaign, bucket, recipients FROM campaign_buckets"):
        out.setdefault(campaign, []).append((bucket, n))
    return out

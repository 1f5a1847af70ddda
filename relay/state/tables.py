"""Governance state in the spool's SQLite database: the tables, and the writes that ride in
the same transaction as the delivery outcome they count (so a crash cannot count a delivery
that was not recorded, nor record one that was not counted).

    domain_days   (domain, day, delivered)   recipients delivered per UTC day
    domain_state  (domain, first_send)       when relay first delivered for the domain
    domain_pauses (domain, since, reason)    domains whose mail waits (`relay domains pause`)
    campaign_buckets (campaign, bucket, recipients)   mass-send detection counts
    feedback_events (dedupe_key, domain, recipient, kind, at, received)   bounces,
                                             complaints... (deduped); `at` as the source
                                             dates it, `received` when relay learnt of it
    policy_pauses (domain, scope, since, reason)   pauses decided by the reputation rules
    domain_resumes (domain, at)              an operator's resume: holds until new feedback
    message_ids   (message_id, domain, at)   Message-ID -> sender domain, to attribute
                                             feedback that names only the message
    rate_windows  (key, entries)             the governor's sliding windows (JSON), saved
                                             when a delivery process stops, for the next
"""
from __future__ import annotations

import json
import sqlite3

from relay.clock import day_of

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
CREATE TABLE IF NOT EXISTS feedback_events (
    dedupe_key TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    received REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_by_domain ON feedback_events (domain, at);
CREATE TABLE IF NOT EXISTS policy_pauses (
    domain TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    since REAL NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domain_resumes (
    domain TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS message_ids (
    message_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domain_pauses (
    domain TEXT PRIMARY KEY,
    since REAL NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT PRIMARY KEY,
    entries TEXT NOT NULL
) WITHOUT ROWID;
"""



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


def paused(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """domain -> (scope, reason): the operator's pauses (all mail) and the policy's."""
    out = {d: ("all", r) for d, r in conn.execute("SELECT domain, reason FROM domain_pauses")}
    for domain, scope, reason in conn.execute("SELECT domain, scope, reason FROM policy_pauses"):
        if domain not in out:
            out[domain] = (scope, reason)
    return out


def pause(conn: sqlite3.Connection, domain: str, reason: str, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO domain_pauses (domain, since, reason) VALUES (?, ?, ?)",
                 (domain, now, reason))


def resume(conn: sqlite3.Connection, domain: str, now: float) -> bool:
    """The operator's resume lifts every pause and holds until new feedback arrives (the
    delivery process releases the held mail when it sees the pause gone)."""
    lifted = conn.execute("DELETE FROM domain_pauses WHERE domain = ?", (domain,)).rowcount
    lifted += conn.execute("DELETE FROM policy_pauses WHERE domain = ?", (domain,)).rowcount
    conn.execute("INSERT OR REPLACE INTO domain_resumes (domain, at) VALUES (?, ?)", (domain, now))
    return lifted > 0


def release_held(conn: sqlite3.Connection, now: float, paused: dict[str, tuple[str, str]],
                 domain: str | None = None) -> int:
    """Make the mail held by a pause due now: of `domain`, or of every domain, except where
    `paused` (domain -> (scope, reason)) still holds all of it; how many messages. The hold
    ends early, so the time it will not last is taken back from the message's `held` time
    (which never counts toward max_age)."""
    rows = conn.execute("SELECT id, domain FROM messages WHERE hold_reason = 'paused'"
                        " AND next_attempt > ?" + (" AND domain = ?" if domain else ""),
                        (now, domain) if domain else (now,)).fetchall()
    ids = [(now, id_) for id_, d in rows if paused.get(d, ("",))[0] != "all"]
    conn.executemany("UPDATE messages SET held = MAX(0, held - (next_attempt - ?1)),"
                     " next_attempt = ?1, hold_reason = '' WHERE id = ?2", ids)
    return len(ids)


def release_rate_holds(conn: sqlite3.Connection, domain: str, now: float) -> int:
    """Make the domain's mail held by a rate due now (to be given fresh slots), giving back
    the hold time it will not use; how many messages."""
    return conn.execute(
        "UPDATE messages SET held = MAX(0, held - (next_attempt - ?1)), next_attempt = ?1,"
        " hold_reason = '' WHERE domain = ?2 AND hold_reason IN ('rate', 'bulk_pacing')"
        " AND next_attempt > ?1", (now, domain)).rowcount


def record_feedback(conn: sqlite3.Connection, key: str, domain: str, recipient: str, kind: str,
                    at: float, received: float) -> bool:
    """Store one feedback event; False when it was seen before (a duplicate)."""
    return conn.execute("INSERT OR IGNORE INTO feedback_events (dedupe_key, domain, recipient,"
                        " kind, at, received) VALUES (?, ?, ?, ?, ?, ?)",
                        (key, domain, recipient.lower(), kind, at, received)).rowcount > 0


def count_feedback(conn: sqlite3.Connection, domain: str, kinds: tuple[str, ...], since: float,
                   recipient: str | None = None) -> int:
    marks = ",".join("?" * len(kinds))
    sql = f"SELECT COUNT(*) FROM feedback_events WHERE domain = ? AND at >= ? AND kind IN ({marks})"
    args: list = [domain, since, *kinds]
    if recipient is not None:
        sql += " AND recipient = ?"
        args.append(recipient.lower())
    return conn.execute(sql, args).fetchone()[0]


def delivered_since(conn: sqlite3.Connection, domain: str, since: float) -> int:
    return conn.execute("SELECT COALESCE(SUM(delivered), 0) FROM domain_days WHERE domain = ?"
                        " AND day >= ?", (domain, day_of(since))).fetchone()[0]


def newest_feedback(conn: sqlite3.Connection, domain: str, kinds: tuple[str, ...]) -> float:
    """When relay last learnt of feedback of these kinds for the domain."""
    marks = ",".join("?" * len(kinds))
    return conn.execute(f"SELECT COALESCE(MAX(received), 0) FROM feedback_events WHERE domain = ?"
                        f" AND kind IN ({marks})", (domain, *kinds)).fetchone()[0]


def resumed_at(conn: sqlite3.Connection, domain: str) -> float | None:
    row = conn.execute("SELECT at FROM domain_resumes WHERE domain = ?", (domain,)).fetchone()
    return row[0] if row else None


def policy_pause(conn: sqlite3.Connection, domain: str) -> str | None:
    row = conn.execute("SELECT scope FROM policy_pauses WHERE domain = ?", (domain,)).fetchone()
    return row[0] if row else None


def set_policy_pause(conn: sqlite3.Connection, domain: str, scope: str | None, reason: str,
                     now: float) -> None:
    if scope is None:
        conn.execute("DELETE FROM policy_pauses WHERE domain = ?", (domain,))
    else:
        conn.execute("INSERT OR REPLACE INTO policy_pauses (domain, scope, since, reason)"
                     " VALUES (?, ?, ?, ?)", (domain, scope, now, reason))


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


def remember_message_id(conn: sqlite3.Connection, message_id: str, domain: str, now: float) -> None:
    conn.execute("INSERT OR IGNORE INTO message_ids (message_id, domain, at) VALUES (?, ?, ?)",
                 (normalize_message_id(message_id), domain, now))


def domain_of_message(conn: sqlite3.Connection, message_id: str) -> str | None:
    row = conn.execute("SELECT domain FROM message_ids WHERE message_id = ?",
                       (normalize_message_id(message_id),)).fetchone()
    return row[0] if row else None


def forget_message_ids(conn: sqlite3.Connection, before: float) -> None:
    conn.execute("DELETE FROM message_ids WHERE at < ?", (before,))


def normalize_message_id(value: str) -> str:
    return value.strip().strip("<>").strip().lower()


def save_windows(conn: sqlite3.Connection, windows: dict[str, list[tuple[float, int]]]) -> None:
    conn.execute("DELETE FROM rate_windows")
    conn.executemany("INSERT INTO rate_windows (key, entries) VALUES (?, ?)",
                     [(key, json.dumps(entries)) for key, entries in windows.items()])


def load_windows(conn: sqlite3.Connection) -> dict[str, list[tuple[float, int]]]:
    return {key: [(ts, n) for ts, n in json.loads(entries)]
            for key, entries in conn.execute("SELECT key, entries FROM rate_windows")}

"""The embedded governance state's tables, in the spool's SQLite database, and the SQL on
them. Functions run on the caller's connection inside the caller's transaction;
`sqlite.py`'s `SqliteState` is the only caller.

    ramp_days     (domain, provider, day, delivered)   recipients delivered per UTC day, per
                                             mailbox provider ('' when caps are per domain)
    ramp_state    (domain, provider, first_send)  when relay first delivered to that provider
    day_health    (domain, day, complaints, bounces, paused)   what decides whether a day
                                             counts toward the warm-up
    outcome_keys  (key, at)                  delivery outcomes already counted (queue id and
                                             attempt): a retried write counts once
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
    dmarc_reports (domain, org, report_id, period_begin, period_end, aligned, failing, body)
                                             DMARC aggregate reports (deduped on domain, org
                                             and report id); the body is the report's JSON,
                                             its totals are beside it so that the metrics
                                             never decode one
"""
from __future__ import annotations

import json
import sqlite3

from relay.clock import day_of
from relay.config import Reputation
from relay.governor.reputation import day_verdict, with_pause
from relay.governor.governor import ramp
from relay.watch.aggregate import AggregateReport

SCHEMA = """
CREATE TABLE IF NOT EXISTS ramp_days (
    domain TEXT NOT NULL,
    provider TEXT NOT NULL,
    day INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, day, provider)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ramp_state (
    domain TEXT NOT NULL,
    provider TEXT NOT NULL,
    first_send REAL NOT NULL,
    PRIMARY KEY (domain, provider)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS day_health (
    domain TEXT NOT NULL,
    day INTEGER NOT NULL,
    complaints INTEGER NOT NULL DEFAULT 0,
    bounces INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcome_keys (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcome_keys_at ON outcome_keys (at);
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
-- a rowid table: a report's body may be large (a row per source IP)
CREATE TABLE IF NOT EXISTS dmarc_reports (
    domain TEXT NOT NULL,
    org TEXT NOT NULL,
    report_id TEXT NOT NULL,
    period_begin REAL NOT NULL,
    period_end REAL NOT NULL,
    aligned INTEGER NOT NULL,
    failing INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (domain, org, report_id)
);
CREATE INDEX IF NOT EXISTS dmarc_by_domain ON dmarc_reports (domain, period_end);
CREATE INDEX IF NOT EXISTS dmarc_by_end ON dmarc_reports (period_end);
"""



def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables; move a state written before per-provider ramps (domain_days,
    domain_state: the whole domain's, provider '') and before feedback kept its receipt time."""
    conn.executescript(SCHEMA)
    conn.execute("BEGIN IMMEDIATE")         # another process may be opening it too
    try:
        _move_old_tables(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _move_old_tables(conn: sqlite3.Connection) -> None:
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "domain_days" in tables:
        conn.execute("INSERT OR IGNORE INTO ramp_days (domain, provider, day, delivered)"
                     " SELECT domain, '', day, delivered FROM domain_days")
        conn.execute("DROP TABLE domain_days")
    if "domain_state" in tables:
        conn.execute("INSERT OR IGNORE INTO ramp_state (domain, provider, first_send)"
                     " SELECT domain, '', first_send FROM domain_state")
        conn.execute("DROP TABLE domain_state")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(feedback_events)")}
    if "received" not in columns:
        conn.execute("ALTER TABLE feedback_events ADD COLUMN received REAL NOT NULL DEFAULT 0")


def add_deliveries(conn: sqlite3.Connection, domain: str, count: int, now: float,
                   provider: str = "") -> None:
    conn.execute("INSERT INTO ramp_days (domain, provider, day, delivered) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT DO UPDATE SET delivered = delivered + excluded.delivered",
                 (domain, provider, day_of(now), count))
    # a provider's new ramp continues the whole domain's, when the domain had one (see
    # Governor._first)
    conn.execute("INSERT INTO ramp_state (domain, provider, first_send) VALUES (?1, ?2, MIN(?3,"
                 " COALESCE((SELECT first_send FROM ramp_state WHERE domain = ?1 AND provider = ''),"
                 " ?3))) ON CONFLICT DO UPDATE SET first_send = MIN(first_send, excluded.first_send)",
                 (domain, provider, now))


def first_count(conn: sqlite3.Connection, key: str, now: float) -> bool:
    """True the first time `key` (an outcome: queue id and attempt) is seen."""
    return conn.execute("INSERT OR IGNORE INTO outcome_keys (key, at) VALUES (?, ?)",
                        (key, now)).rowcount > 0


def forget_outcomes(conn: sqlite3.Connection, before: float) -> None:
    """An outcome is retried within seconds of its attempt (or after a restart): keys older
    than `before` can go."""
    conn.execute("DELETE FROM outcome_keys WHERE at < ?", (before,))


def load(conn: sqlite3.Connection, since_day: int,
         domain: str | None = None) -> tuple[dict[str, float], dict[tuple[str, int], int]]:
    """(first send per ramp, delivered per (ramp, day) since `since_day`), of every domain or
    of `domain`; a ramp is the domain, or a provider within it (`governor.ramp`)."""
    only, args = (" AND domain = ?", (domain,)) if domain else ("", ())
    first = {ramp(d, p): t for d, p, t in conn.execute(
        "SELECT domain, provider, first_send FROM ramp_state WHERE 1" + only, args)}
    volumes = {(ramp(d, p), day): n for d, p, day, n in conn.execute(
        "SELECT domain, provider, day, delivered FROM ramp_days WHERE day >= ?" + only,
        (since_day, *args))}
    return first, volumes


def unhealthy(conn: sqlite3.Connection, policy: Reputation, now: float,
              since_day: int, domain: str | None = None) -> dict[str, dict[int, str]]:
    """Per domain, the days since `since_day` that do not count toward the warm-up, and why:
    a pause held part of it, or its complaint or hard-bounce rate (that day's feedback over
    that day's deliveries; any feedback on a day without deliveries) went over the
    reputation limit. Today is included while it lasts. Of every domain, or of `domain`."""
    out: dict[str, dict[int, str]] = {}
    only, args = (" AND h.domain = ?", (since_day, domain)) if domain else ("", (since_day,))
    for name, day, complaints, bounces, paused_, sent in conn.execute(
            "SELECT h.domain, h.day, h.complaints, h.bounces, h.paused, (SELECT COALESCE("
            "SUM(delivered), 0) FROM ramp_days r WHERE r.domain = h.domain AND r.day = h.day)"
            " FROM day_health h WHERE h.day >= ?" + only, args):
        why = day_verdict(complaints, bounces, bool(paused_), sent, policy)
        if why:
            out.setdefault(name, {})[day] = why
    for name, since in conn.execute("SELECT domain, since FROM domain_pauses UNION ALL"
                                    " SELECT domain, since FROM policy_pauses"):
        if domain is None or name == domain:
            with_pause(out.setdefault(name, {}), max(day_of(since), since_day), day_of(now))
    return out


def _mark_paused(conn: sqlite3.Connection, domain: str, since: float, until: float) -> None:
    conn.executemany("INSERT INTO day_health (domain, day, paused) VALUES (?, ?, 1)"
                     " ON CONFLICT DO UPDATE SET paused = 1",
                     [(domain, day) for day in range(day_of(since), day_of(until) + 1)])


def _count_health(conn: sqlite3.Connection, domain: str, kind: str, at: float) -> None:
    column = {"complained": "complaints", "bounced_hard": "bounces"}.get(kind)
    if column is not None:
        conn.execute(f"INSERT INTO day_health (domain, day, {column}) VALUES (?, ?, 1)"
                     f" ON CONFLICT DO UPDATE SET {column} = {column} + 1", (domain, day_of(at)))


def known_domains(conn: sqlite3.Connection) -> list[str]:
    """The domains the state has a ramp or a pause for."""
    return [d for (d,) in conn.execute("SELECT domain FROM ramp_state UNION SELECT domain"
                                       " FROM domain_pauses UNION SELECT domain FROM policy_pauses"
                                       " ORDER BY 1")]


def policy_paused(conn: sqlite3.Connection) -> list[str]:
    return [d for (d,) in conn.execute("SELECT domain FROM policy_pauses").fetchall()]


def forget_feedback(conn: sqlite3.Connection, received_before: float) -> None:
    conn.execute("DELETE FROM feedback_events WHERE received < ?", (received_before,))


def paused(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """domain -> (scope, reason): the operator's pauses (all mail) and the policy's."""
    out = {d: ("all", r) for d, r in conn.execute("SELECT domain, reason FROM domain_pauses")}
    for domain, scope, reason in conn.execute("SELECT domain, scope, reason FROM policy_pauses"):
        if domain not in out:
            out[domain] = (scope, reason)
    return out


def pause(conn: sqlite3.Connection, domain: str, reason: str, now: float) -> None:
    conn.execute("INSERT INTO domain_pauses (domain, since, reason) VALUES (?, ?, ?)"
                 " ON CONFLICT DO UPDATE SET reason = excluded.reason", (domain, now, reason))


def resume(conn: sqlite3.Connection, domain: str, now: float) -> bool:
    """The operator's resume lifts every pause and holds until new feedback arrives (the
    delivery process releases the held mail when it sees the pause gone)."""
    lifted = 0
    for table in ("domain_pauses", "policy_pauses"):
        for (since,) in conn.execute(f"SELECT since FROM {table} WHERE domain = ?", (domain,)).fetchall():
            _mark_paused(conn, domain, since, now)
        lifted += conn.execute(f"DELETE FROM {table} WHERE domain = ?", (domain,)).rowcount
    conn.execute("INSERT OR REPLACE INTO domain_resumes (domain, at) VALUES (?, ?)", (domain, now))
    return lifted > 0


def record_feedback(conn: sqlite3.Connection, key: str, domain: str, recipient: str, kind: str,
                    at: float, received: float, health_at: float | None = None) -> bool:
    """Store one feedback event (and count it against the health of the day of `health_at`,
    by default its own time); False when it was seen before (a duplicate)."""
    if conn.execute("INSERT OR IGNORE INTO feedback_events (dedupe_key, domain, recipient,"
                    " kind, at, received) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, domain, recipient.lower(), kind, at, received)).rowcount == 0:
        return False
    _count_health(conn, domain, kind, at if health_at is None else health_at)
    return True


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
    return conn.execute("SELECT COALESCE(SUM(delivered), 0) FROM ramp_days WHERE domain = ?"
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
    for (since,) in conn.execute("SELECT since FROM policy_pauses WHERE domain = ?",
                                 (domain,)).fetchall():
        _mark_paused(conn, domain, since, now)
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


def record_dmarc_report(conn: sqlite3.Connection, report: AggregateReport,
                        ended_before: float) -> bool:
    """Forget the domain's reports whose period ended before `ended_before`, then store
    `report` under its domain in lower case; False when that domain already has a report
    with the same (org, report id): nothing is stored then."""
    domain = report.domain.lower()
    forget_dmarc_reports(conn, ended_before, domain)
    return conn.execute(
        "INSERT OR IGNORE INTO dmarc_reports (domain, org, report_id, period_begin, period_end,"
        " aligned, failing, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (domain, report.org_name, report.report_id, report.begin, report.end, report.aligned,
         report.failing, report.to_json())).rowcount == 1


def forget_dmarc_reports(conn: sqlite3.Connection, ended_before: float,
                         domain: str | None = None) -> None:
    """The reports whose period ended before `ended_before`, of `domain` or of every domain."""
    only, args = (" AND domain = ?", (domain,)) if domain is not None else ("", ())
    conn.execute("DELETE FROM dmarc_reports WHERE period_end < ?" + only, (ended_before, *args))


def dmarc_reports(conn: sqlite3.Connection, domain: str | None,
                  since: float) -> list[AggregateReport]:
    """The reports whose period ends at or after `since`, of `domain` or of every domain,
    oldest first."""
    only, args = (" AND domain = ?", (domain.lower(),)) if domain is not None else ("", ())
    return [AggregateReport.from_json(body) for (body,) in conn.execute(
        "SELECT body FROM dmarc_reports WHERE period_end >= ?" + only +
        " ORDER BY period_begin, period_end, org, report_id", (since, *args))]


def dmarc_totals(conn: sqlite3.Connection, since: float) -> dict[str, tuple[int, int]]:
    """domain -> (aligned, failing) over the reports ending at or after `since` (the bodies
    are not read)."""
    return {domain: (aligned, failing) for domain, aligned, failing in conn.execute(
        "SELECT domain, SUM(aligned), SUM(failing) FROM dmarc_reports WHERE period_end >= ?"
        " GROUP BY domain ORDER BY domain", (since,))}


def export(conn: sqlite3.Connection, since_day: int, events_since: float) -> dict[str, list]:
    """Every table a fleet shares (`relay fleet import`), as rows: ramps' first sends,
    volumes since `since_day`, days' health, pauses and resumes, and the feedback events
    received since `events_since`."""
    queries = {
        "first": "SELECT domain, provider, first_send FROM ramp_state",
        "volumes": "SELECT domain, provider, day, delivered FROM ramp_days WHERE day >= ?",
        "health": "SELECT domain, day, complaints, bounces, paused FROM day_health",
        "paused": "SELECT domain, since, reason FROM domain_pauses",
        "policy": "SELECT domain, scope, since, reason FROM policy_pauses",
        "resumed": "SELECT domain, at FROM domain_resumes",
        "events": "SELECT domain, dedupe_key, kind, recipient, at FROM feedback_events"
                  " WHERE received >= ?"}
    args = {"volumes": (since_day,), "events": (events_since,)}
    return {name: conn.execute(sql, args.get(name, ())).fetchall() for name, sql in queries.items()}

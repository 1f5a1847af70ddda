"""`relay fleet import`: a relay's embedded governance state (the SQLite tables under its
`spool.path`) added to the fleet's Redis, once, when it moves from `state.backend: sqlite` to
`redis`: its suppressions, pauses, warm-up (first sends, the days' volumes and health), the
feedback events the rates still count, and the DMARC aggregate reports still kept. Without
it the fleet would start the domain's warm-up again, forget who complained, and send to them.

Counts add up (two relays that each governed alone both import, and the fleet knows both),
so a node imports once: Redis remembers which nodes did (`relay:imported`). DMARC reports
are stored as they would arrive (deduplicated): a report two nodes both had is stored once.
"""
from __future__ import annotations

from dataclasses import dataclass

from relay.clock import day_of
from relay.spool.db import Database
from relay.state import DMARC_RETENTION, tables
from relay.state import suppressions
from relay.state.redis import KNOWN_DAYS, RedisState
from relay.state.redis_scripts import Refill, horizon

IMPORTED = "relay:imported"          # node name -> when it imported its embedded state
CHUNK = 10_000                       # suppressions and events per script call


class AlreadyImported(Exception):
    pass


@dataclass
class Imported:
    domains: int = 0
    suppressions: int = 0
    pauses: int = 0
    events: int = 0
    dmarc_reports: int = 0          # new to the fleet


def read_embedded(db: Database, config, now: float) -> dict[str, Refill]:
    """The embedded state, per sender domain, as what refill.lua adds."""
    def export(conn):
        tables.migrate(conn)                       # a node that never ran on SQLite: empty
        conn.executescript(suppressions.SCHEMA)
        return tables.export(conn, day_of(now) - KNOWN_DAYS, now - horizon(config))
    rows = db.now(export)
    out: dict[str, Refill] = {}

    def of(domain: str) -> Refill:
        return out.setdefault(domain, Refill())
    for domain, provider, at in rows["first"]:
        of(domain).first[provider] = at
    for domain, provider, day, n in rows["volumes"]:
        of(domain).volumes[(provider, day)] = n
    for domain, day, c, b, paused in rows["health"]:
        of(domain).health.append((day, c, b, bool(paused)))
    for domain, since, reason in rows["paused"]:
        of(domain).pause += [("op_reason", reason), ("op_since", repr(since))]
    for domain, scope, since, reason in rows["policy"]:
        of(domain).pause += [("policy_scope", scope), ("policy_reason", reason),
                             ("policy_since", repr(since))]
    for domain, at in rows["resumed"]:
        of(domain).pause.append(("resumed", repr(at)))
    for domain, key, kind, recipient, at in rows["events"]:
        of(domain).events.append((key, kind, recipient, at))
    for recipient, domain, reason, since in db.now(suppressions.entries):
        of(domain).suppressions.append((recipient, f"{reason.value}|{since!r}"))
    return out


async def import_embedded(db: Database, state: RedisState, node: str, force: bool = False) -> Imported:
    """Add the node's embedded state to Redis; AlreadyImported when this node did before
    (unless `force`: its counts would then count twice)."""
    now = state.clock.now()
    if not await state.client.hsetnx(IMPORTED, node, repr(now)) and not force:
        when = float(await state.client.hget(IMPORTED, node))
        raise AlreadyImported(when)
    await state.client.hset(IMPORTED, node, repr(now))
    done = Imported()
    for domain, refill in sorted(read_embedded(db, state.config, now).items()):
        for part in refill.parts(CHUNK):
            await state.absorb(domain, part)
        done.domains += 1
        done.suppressions += len(refill.suppressions)
        done.pauses += any(field in ("op_reason", "policy_scope") for field, _ in refill.pause)
        done.events += len(refill.events)
    for report in db.now(lambda conn: tables.dmarc_reports(conn, None, now - DMARC_RETENTION)):
        done.dmarc_reports += await state.record_dmarc_report(report)
    return done

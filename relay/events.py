"""The message event log: one JSON line per thing that happens to a message.

Events go to the `relay.events` logger, so operators route them like any log (stderr by
default). The kinds form a closed set; fields are flat and never hold message content.
"""
from __future__ import annotations

import enum
import json
import logging
import time

log = logging.getLogger("relay.events")


class Event(enum.StrEnum):
    RECEIVED = "received"
    REJECTED = "rejected"
    QUEUED = "queued"
    ATTEMPT = "attempt"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    DSN_SENT = "dsn_sent"
    DELETED = "deleted"
    SUPPRESSED = "suppressed"
    COMPLAINED = "complained"
    PAUSED = "paused"
    RESUMED = "resumed"


def emit(event: Event, **fields: object) -> None:
    if log.isEnabledFor(logging.INFO):
        record = {"ts": round(time.time(), 3), "event": event.value}
        record.update({k: v for k, v in fields.items() if v is not None})
        log.info(json.dumps(record, separators=(",", ":"), default=str))

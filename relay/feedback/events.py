"""The normalized feedback event: what every webhook, DSN, ARF report or upstream reply becomes.

    FeedbackKind    the closed set of outcomes relay counts and acts on (REFERENCE "Providers")
    FeedbackEvent   one outcome for one recipient, with a key that is equal for duplicates

Each source names things its own way (Brevo `hard_bounce`, SES `Permanent`, Postmark
`HardBounce`); the parsers map them onto `FeedbackKind` so the rates, pauses and suppression
list see one vocabulary. Events no rule uses (opens, clicks, "processed") are not represented.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json


class FeedbackKind(enum.StrEnum):
    """What happened to one recipient; closed: a new source maps onto these, never adds one."""
    DELIVERED = "delivered"         # accepted by the recipient's server: the rates' denominator
    DEFERRED = "deferred"           # temporarily refused, still being retried by the provider
    BOUNCED_HARD = "bounced_hard"   # the address is dead (RFC 3463 5.1.x, 5.2.1): suppress
    BOUNCED_SOFT = "bounced_soft"   # failed for now (full 5.2.2, 4.x.x): N of them suppress
    BLOCKED = "blocked"             # refused by policy or reputation (5.7.x): never suppresses
    COMPLAINED = "complained"       # marked as spam (ARF `abuse`, provider spam event): suppress
    UNSUBSCRIBED = "unsubscribed"   # opted out at the provider: suppress


@dataclasses.dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One outcome for one recipient.

    `source` is the provider name ("brevo", "mailjet", "ses", "sendgrid", "postmark") or
    "dsn", "arf", "upstream". `at` is the event time in Unix seconds. `message_id` is the
    message's identifier as the source reports it, `status` an RFC 3463 enhanced code when one
    is known, `reason` free text ("" when none). `sender_domain` is None when the source does
    not say who sent the message. Equal `dedupe_key`s mean the same event delivered twice.
    """
    kind: FeedbackKind
    recipient: str
    source: str
    at: float
    message_id: str | None
    reason: str
    status: str | None
    dedupe_key: str
    sender_domain: str | None = None


def dedupe_key(source: str, *parts: object) -> str:
    """A stable key for an event from what identifies it at its source: `source:` + 32 hex.

    Hashed so a key has a bounded length whatever the ids look like; the parts are encoded as
    JSON so ("a:b", "c") and ("a", "b:c") cannot collide.
    """
    digest = hashlib.sha256(json.dumps([source, *parts], default=str).encode()).hexdigest()
    return f"{source}:{digest[:32]}"

"""Mass-send detection: which campaign a message belongs to, and when a campaign is bulk.

A campaign is named by `List-Id`, `Feedback-ID` or a provider tag header (Brevo's
`X-Mailin-Tag`, Mailjet's `X-Mailjet-Campaign`) when the message has one, else by its
(From address, Subject); it is scoped to the sender domain. When one campaign passes
`limits.bulk.recipients_threshold` recipients within `limits.bulk.window`, in one
transaction or across many, its messages from then on are bulk.

Counts are kept in time buckets (1/24 of the window each), so memory is bounded by the number
of live campaigns, not recipients; campaigns idle for a whole window are forgotten. The
spool persists each message's count with the message itself, so a restart keeps them.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

CAMPAIGN_HEADERS = (b"list-id", b"feedback-id", b"x-mailin-tag", b"x-mailjet-campaign")
BUCKETS_PER_WINDOW = 24
MAX_CAMPAIGNS = 100_000


def campaign_key(domain: str, headers: list[tuple[bytes, bytes]], from_address: str) -> str:
    """A short, stable name for the campaign (a hash: no subject or address is stored)."""
    by_name = {name.strip().lower(): value for name, value in headers}
    for name in CAMPAIGN_HEADERS:
        if name in by_name:
            basis = name + b":" + b" ".join(by_name[name].split())
            break
    else:
        subject = b" ".join(by_name.get(b"subject", b"").split())
        basis = b"from:" + from_address.lower().encode("utf-8", "surrogateescape") + b"\0" + subject
    return hashlib.sha256(domain.encode() + b"\0" + basis).hexdigest()[:32]


class CampaignCounter:
    def __init__(self, window: float, buckets: dict[str, list[tuple[int, int]]] | None = None) -> None:
        self.window = window
        self.bucket_size = window / BUCKETS_PER_WINDOW
        self._campaigns: OrderedDict[str, deque[tuple[int, int]]] = OrderedDict(
            (key, deque(sorted(entries))) for key, entries in (buckets or {}).items())

    def bucket_of(self, now: float) -> int:
        return int(now // self.bucket_size)

    def total(self, key: str, now: float) -> int:
        """The campaign's recipients within the window."""
        bucket = self.bucket_of(now)
        return sum(n for b, n in self._campaigns.get(key, ()) if b > bucket - BUCKETS_PER_WINDOW)

    def add(self, key: str, recipients: int, now: float) -> int:
        """Count `recipients` more for the campaign; return its total within the window."""
        bucket = self.bucket_of(now)
        entries = self._campaigns.setdefault(key, deque())
        self._campaigns.move_to_end(key)
        while entries and entries[0][0] <= bucket - BUCKETS_PER_WINDOW:
            entries.popleft()
        if entries and entries[-1][0] == bucket:
            entries[-1] = (bucket, entries[-1][1] + recipients)
        else:
            entries.append((bucket, recipients))
        while len(self._campaigns) > MAX_CAMPAIGNS:
            self._campaigns.popitem(last=False)
        return sum(n for _, n in entries)

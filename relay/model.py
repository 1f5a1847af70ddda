"""The nouns both pipelines share: who is sending, what was accepted, what became of it."""
from __future__ import annotations

import base64
import enum
import os
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or network-trusted) user and the senders it may use."""
    username: str
    senders: frozenset[str]          # lower-case domains ("acme.fr") or addresses ("a@b.fr")

    def may_send_as(self, address: str) -> bool:
        address = address.lower()
        domain = address.rpartition("@")[2]
        return address in self.senders or domain in self.senders


class Stream(enum.IntEnum):
    """Delivery order: transactional mail always goes before bulk mail."""
    TRANSACTIONAL = 0
    BULK = 1


class RecipientState(enum.StrEnum):
    QUEUED = "queued"          # not yet delivered: first attempt pending, or deferred
    DELIVERED = "delivered"
    BOUNCED = "bounced"        # the route answered 5xx
    EXPIRED = "expired"        # still failing temporarily after spool.max_age


FINAL_STATES = frozenset({RecipientState.DELIVERED, RecipientState.BOUNCED, RecipientState.EXPIRED})


@dataclass(slots=True)
class Recipient:
    address: str
    state: RecipientState = RecipientState.QUEUED
    reply: str = ""            # the last reply from the route for this recipient


@dataclass(slots=True)
class QueuedMessage:
    """A message in the spool: its envelope, its signed bytes and per-recipient state."""
    id: str
    mail_from: str             # "" for the null sender (DSNs)
    recipients: list[Recipient]
    domain: str                # the sender domain whose route carries it
    route: str
    body: bytes
    created: float
    attempts: int = 0
    next_attempt: float = 0.0
    stream: Stream = Stream.TRANSACTIONAL
    mail_options: list[str] = field(default_factory=list)
    held: float = 0.0          # seconds the governor held it: they do not count toward max_age

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state is RecipientState.QUEUED]


# RFC 4648 base32 digits, rewritten as Crockford's (whose order is also ASCII order).
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class _Unpredictable:
    """Random bytes from the system, 4 KB a system call: a system call each message let the
    event loop's thread give up the GIL and wait to take it back (3% of the listener's
    samples). A forked child starts with none of its parent's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(4096), 0
            self._at += n
            return self._pool[self._at - n:self._at]


_unpredictable = _Unpredictable()


def unpredictable(n: int) -> bytes:
    """`n` random bytes from the system, without a system call each time."""
    return _unpredictable.take(n)


def new_queue_id(now: float | None = None) -> str:
    """A short, time-ordered, unique id: 48 bits of milliseconds and 32 random bits, as 16
    Crockford base32 characters. The random bits are the system's, never a PRNG's: a message
    relay did not send to you is one whose id you cannot name (untrusted feedback counts only
    for a Message-ID relay gave, and `<id@domain>` is the one it adds)."""
    millis = int((now if now is not None else time.time()) * 1000)
    raw = millis.to_bytes(6, "big") + unpredictable(4)
    return base64.b32encode(raw).translate(_CROCKFORD).decode()

"""The console's logins: who is logged in, and the token each of their forms must carry.

A login (a `console.users` name and its `users:` password, checked as SMTP AUTH checks it,
throttled by the same `AuthThrottle`) opens a session: a random 256-bit id in a cookie
(`HttpOnly`, `SameSite=Strict`, path /console/, `Secure` when the request came over HTTPS)
and a random CSRF token that every POST form carries (`csrf` field, compared in constant
time). Sessions live in this process's memory: a restart logs everyone out. A session idle
for `console.session` ends; logging out ends it at once. Before login, the login form's
own token is a signed pre-session value, so the login POST is CSRF-checked too.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from relay.clock import Clock

COOKIE = "relay_console"
MAX_SESSIONS = 1000


@dataclass
class Session:
    id: str
    user: str
    csrf: str
    seen: float
    flash: str = ""                      # what the last action did, shown on the next page

    def take_flash(self) -> str:
        flash, self.flash = self.flash, ""
        return flash


class Sessions:
    def __init__(self, clock: Clock, idle: float) -> None:
        self.clock = clock
        self.idle = idle
        self._by_id: dict[str, Session] = {}
        self._key = secrets.token_bytes(32)          # signs the pre-login form tokens

    def open(self, user: str) -> Session:
        now = self.clock.now()
        self._forget_idle(now)
        if len(self._by_id) >= MAX_SESSIONS:          # the oldest goes
            del self._by_id[min(self._by_id.values(), key=lambda s: s.seen).id]
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        now = self.clock.now()
        if session is None or now - session.seen > self.idle:
            if session is not None:
                del self._by_id[session.id]
            return None
        session.seen = now
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def close_user(self, user: str) -> None:
        """A user removed from console.users (a reload): their sessions end."""
        for session in [s for s in self._by_id.values() if s.user == user]:
            del self._by_id[session.id]

    def users(self) -> set[str]:
        return {s.user for s in self._by_id.values()}

    def login_token(self, nonce: str) -> str:
        """The login form's CSRF token for the pre-login cookie `nonce`."""
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def _forget_idle(self, now: float) -> None:
        for session in [s for s in self._by_id.values() if now - s.seen > self.idle]:
            del self._by_id[session.id]


def same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())

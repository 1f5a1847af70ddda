"""relay.console.sessions: sessions end when idle or closed, are bounded in number, and the
login form's token is tied to its pre-login cookie. Time is a FakeClock."""
from __future__ import annotations

from relay.console.sessions import MAX_SESSIONS, Sessions, same
from tests.fakes.clock import FakeClock


def test_a_session_lives_while_used_and_ends_when_idle():
    clock = FakeClock(1000.0)
    sessions = Sessions(clock, idle=3600)
    session = sessions.open("admin")
    clock.advance(3000)
    assert sessions.get(session.id) is session          # used: its idle time starts again
    clock.advance(3000)
    assert sessions.get(session.id) is session
    clock.advance(3601)
    assert sessions.get(session.id) is None
    assert sessions.get(session.id) is None and sessions.users() == set()


def test_ids_and_tokens_are_random_and_distinct():
    sessions = Sessions(FakeClock(0.0), idle=60)
    a, b = sessions.open("admin"), sessions.open("admin")
    assert len({a.id, b.id, a.csrf, b.csrf}) == 4 and len(a.id) >= 40


def test_closing_ends_a_session_and_close_user_ends_all_of_a_users():
    sessions = Sessions(FakeClock(0.0), idle=60)
    a, b, c = sessions.open("admin"), sessions.open("admin"), sessions.open("ops")
    sessions.close(a.id)
    assert sessions.get(a.id) is None and sessions.get(b.id) is b
    sessions.close_user("admin")
    assert sessions.get(b.id) is None and sessions.get(c.id) is c


def test_sessions_are_bounded_the_least_recently_used_goes():
    clock = FakeClock(0.0)
    sessions = Sessions(clock, idle=10_000)
    first = sessions.open("admin")
    for _ in range(MAX_SESSIONS - 1):
        clock.advance(1)
        sessions.open("admin")
    clock.advance(1)
    sessions.open("admin")
    assert sessions.get(first.id) is None and len(sessions._by_id) == MAX_SESSIONS


def test_the_login_token_belongs_to_its_cookie_and_its_process():
    sessions = Sessions(FakeClock(0.0), idle=60)
    token = sessions.login_token("nonce-1")
    assert same(token, sessions.login_token("nonce-1"))
    assert not same(token, sessions.login_token("nonce-2"))
    assert not same(token, Sessions(FakeClock(0.0), idle=60).login_token("nonce-1"))
    assert not same(None, token) and not same("", token)

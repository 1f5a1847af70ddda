"""Repeated AUTH failures from one address are answered more and more slowly, then AUTH
from that address is refused with 454 4.7.0 for `lockout`, even with the right password;
after that, the right password works again. Other addresses are not affected.

Time is a FakeClock handed to the relay: the slow-downs are recorded instead of slept, and
the lockout ends when the test moves the clock, so nothing here waits for real.
"""
import base64
import smtplib
import time

import pytest

from tests.conftest import PASSWORD
from tests.fakes.clock import FakeClock

POLICY = {"slow_after": 2, "lock_after": 6, "window": "10m", "lockout": "5m"}
LOCKOUT = 300.0


def _plain(password: str, username: str = "billing-app") -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


class _Client:
    """One implicit-TLS session from a chosen loopback address, sending single AUTH commands
    (smtplib's login() would retry with another mechanism and count twice)."""

    def __init__(self, relay, context, source: str = "127.0.0.1") -> None:
        self.smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=context,
                                     timeout=10, source_address=(source, 0))
        self.smtp.ehlo("app.test")

    def auth(self, password: str) -> tuple[int, bytes]:
        return self.smtp.docmd("AUTH", "PLAIN " + _plain(password))

    def close(self) -> None:
        self.smtp.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def relay(make_relay, clock):
    return make_relay(clock=clock, **{"server.auth_failures": POLICY})


def _fail(client: _Client, times: int) -> None:
    for _ in range(times):
        code, text = client.auth("wrong")
        assert (code, text[:5]) == (535, b"5.7.8")


def test_failures_are_slowed_then_locked_out_then_forgiven(relay, clock, client_tls):
    """The first `slow_after` failures are answered at once, later ones wait longer each
    time; after `lock_after` failures even the right password gets 454 4.7.0, without
    being checked or delaying anyone; once `lockout` has passed, it works again."""
    client = _Client(relay, client_tls)
    try:
        _fail(client, POLICY["lock_after"] - 1)
        slowed = clock.sleeps[POLICY["slow_after"]:]
        assert clock.sleeps[:POLICY["slow_after"]] == [0.0] * POLICY["slow_after"]
        assert all(0 < a < b for a, b in zip(slowed, slowed[1:])), clock.sleeps
        _fail(client, 1)                                   # the lock_after-th failure

        sleeps_at_lock = len(clock.sleeps)
        for password in (PASSWORD, "wrong", PASSWORD):
            code, text = client.auth(password)
            assert (code, text[:5]) == (454, b"4.7.0")
        assert len(clock.sleeps) == sleeps_at_lock         # refusals are immediate
        code, text = client.smtp.docmd("MAIL", "FROM:<billing@acme.fr>")
        assert (code, text[:5]) == (530, b"5.7.0")        # a submission port: locked out of
                                                           # AUTH is locked out of sending, even
                                                           # from erp's network

        clock.advance(LOCKOUT - 1 - clock.sleeps[sleeps_at_lock - 1])  # the lock began before
        assert client.auth(PASSWORD)[0] == 454                          # the last slowed reply
        clock.advance(2)
        code, text = client.auth(PASSWORD)
        assert (code, text[:5]) == (235, b"2.7.0")
    finally:
        client.close()


def test_locking_failure_is_slowed_like_the_ones_before(relay, clock, client_tls):
    """Each failure past `slow_after` waits at least as long as the one before it, the one
    that triggers the lockout included (server.auth_failures: "each failure past slow_after
    waits longer to be answered")."""
    client = _Client(relay, client_tls)
    try:
        _fail(client, POLICY["lock_after"])
    finally:
        client.close()
    slowed = clock.sleeps[POLICY["slow_after"]:]
    assert len(slowed) == POLICY["lock_after"] - POLICY["slow_after"]
    assert all(0 < a <= b for a, b in zip(slowed, slowed[1:])), clock.sleeps


def test_lockout_is_per_address(relay, clock, client_tls):
    """A locked-out address does not lock out another client address."""
    locked = _Client(relay, client_tls, source="127.0.0.1")
    other = _Client(relay, client_tls, source="127.0.0.2")
    try:
        _fail(locked, POLICY["lock_after"])
        assert locked.auth(PASSWORD)[0] == 454
        code, text = other.auth(PASSWORD)
        assert (code, text[:5]) == (235, b"2.7.0")
    finally:
        locked.close()
        other.close()


def test_failures_older_than_the_window_are_forgotten(relay, clock, client_tls):
    """Failures spread wider than `window` never add up to a lockout."""
    client = _Client(relay, client_tls)
    try:
        for _ in range(POLICY["lock_after"] + 2):
            _fail(client, 1)
            clock.advance(601)                              # window is 10 minutes
        assert clock.sleeps == [0.0] * len(clock.sleeps)
        code, _ = client.auth(PASSWORD)
        assert code == 235
    finally:
        client.close()

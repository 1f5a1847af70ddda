"""relay.checks.auth: scrypt password hashes, users by name and network, AUTH throttling."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import relay
from relay import replies
from relay.checks.auth import AuthThrottle, Users, check_password, hash_password, valid_hash
from relay.config import AuthFailures, User
from relay.errors import TemporaryError
from relay.model import Principal
from tests.fakes.clock import FakeClock


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse")


# --- password hashes ------------------------------------------------------------------

def test_hash_round_trip(stored):
    """A hash checks against its password, given as str or bytes."""
    assert stored.startswith("scrypt$16384$8$1$")
    assert valid_hash(stored)
    assert check_password("correct horse", stored)
    assert check_password(b"correct horse", stored)


def test_wrong_password(stored):
    """Any other password fails, including the empty one and a prefix."""
    assert not check_password("correct horsE", stored)
    assert not check_password("correct", stored)
    assert not check_password("", stored)


def test_hashes_are_salted():
    """The same password hashes differently each time."""
    assert hash_password("x") != hash_password("x")


@pytest.mark.parametrize("bad", [
    "", "plain-text-password", "scrypt$16384$8$1$c2FsdA", "bcrypt$16384$8$1$c2FsdA$ZGln",
    "scrypt$abc$8$1$c2FsdA$ZGlnZXN0", "scrypt$1000$8$1$c2FsdA$ZGlnZXN0",   # n not a power of 2
    "scrypt$16384$8$1$***$ZGlnZXN0", "scrypt$16384$8$1$c2FsdA$",
    "scrypt$1048576$8$1$c2FsdA$ZGlnZXN0",                                  # needs 1 GiB
])
def test_malformed_stored_hash_never_matches(bad):
    """A malformed or unusable stored hash is a mismatch, never an exception."""
    assert check_password("anything", bad) is False


def test_valid_hash_shape():
    """valid_hash tells a well-formed scrypt hash from junk."""
    assert not valid_hash("plain")
    assert not valid_hash("bcrypt$1$2$3$4$5")
    assert not valid_hash("scrypt$x$8$1$s$d")


def test_shipped_demo_hash_matches_its_documented_password():
    """The demo user of default.yaml has the password its comment announces."""
    default = yaml.safe_load((Path(relay.__file__).parent / "default.yaml").read_text())
    [demo] = [u for u in default["users"] if u["username"] == "demo"]
    assert check_password("demo-password", demo["password_hash"])


# --- Users ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def users(stored) -> Users:
    return Users([
        User(username="app", password_hash=stored, senders=["Acme.FR", "CEO@other.fr"]),
        User(username="lan", networks=["10.0.0.0/8", "2001:db8::/32"], senders=["acme.fr"]),
        User(username="loopback", networks=["127.0.0.1/32", "::1/128"], senders=["x.fr"]),
    ])


def test_verify_right_password_gives_the_principal(users):
    """A correct password yields the user's principal, senders lower-cased."""
    assert users.verify("app", b"correct horse") == Principal("app", frozenset({"acme.fr", "ceo@other.fr"}))


def test_verify_wrong_password_or_unknown_user_gives_none(users):
    """A wrong password or an unknown user name both give None."""
    assert users.verify("app", b"wrong") is None
    assert users.verify("nobody", b"correct horse") is None
    assert users.verify("lan", b"") is None          # network-only users cannot AUTH


@pytest.mark.parametrize(("ip", "username"), [
    ("10.1.2.3", "lan"), ("10.255.255.255", "lan"), ("2001:db8::1", "lan"),
    ("2001:DB8:ffff::7", "lan"), ("127.0.0.1", "loopback"), ("::1", "loopback"),
])
def test_by_network_matches_cidrs_and_ipv6(users, ip, username):
    """A client address inside a trusted network is that network's user."""
    assert users.by_network(ip).username == username


@pytest.mark.parametrize("ip", ["11.0.0.1", "127.0.0.2", "2001:db9::1", "::2", "unknown", ""])
def test_by_network_outside_every_network(users, ip):
    """Other addresses, and strings that are not addresses, are not trusted."""
    assert users.by_network(ip) is None


def test_by_network_matches_ipv4_mapped_ipv6_addresses(users):
    """On a dual-stack listener an IPv4 client appears as ::ffff:a.b.c.d; it is still the
    IPv4 client and must match the IPv4 network (as Postfix's smtpd does)."""
    principal = users.by_network("::ffff:10.1.2.3")
    assert principal is not None and principal.username == "lan"


# --- AuthThrottle ---------------------------------------------------------------------

IP = "192.0.2.1"
POLICY = AuthFailures(slow_after=3, lock_after=10, window=900, lockout=600)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock) -> AuthThrottle:
    return AuthThrottle(POLICY, clock)


def fail(throttle: AuthThrottle, clock: FakeClock, times: int, every: float = 1.0) -> list[float]:
    delays = []
    for _ in range(times):
        throttle.failed(IP)
        delays.append(throttle.delay(IP))
        clock.t += every
    return delays


def test_delays_grow_after_slow_after(throttle, clock):
    """The first `slow_after` failures are answered at once; then 1, 2, 4, 8, 8 ... seconds."""
    assert throttle.delay(IP) == 0.0
    assert fail(throttle, clock, 9) == [0, 0, 0, 1, 2, 4, 8, 8, 8]


def test_lock_after_lock_after_failures_in_the_window(throttle, clock):
    """The `lock_after`-th failure within the window locks the address out with 454 4.7.0;
    other addresses are unaffected."""
    fail(throttle, clock, 9)
    throttle.check(IP)                               # 9 failures: not yet
    throttle.failed(IP)
    with pytest.raises(TemporaryError) as info:
        throttle.check(IP)
    assert info.value.reply == replies.R454_AUTH_LOCKED
    throttle.check("192.0.2.2")


def test_lock_expires_after_lockout(throttle, clock):
    """The lock lasts `lockout` seconds, then AUTH is answered again, with a clean slate."""
    fail(throttle, clock, 10, every=0)
    clock.t += 599
    with pytest.raises(TemporaryError):
        throttle.check(IP)
    clock.t += 1
    throttle.check(IP)
    assert throttle.delay(IP) == 0.0


def test_success_during_lockout_does_not_unlock(throttle, clock):
    """A right password during the lockout does not lift it (the check refuses first)."""
    fail(throttle, clock, 10, every=0)
    throttle.succeeded(IP)
    with pytest.raises(TemporaryError):
        throttle.check(IP)


def test_failures_outside_the_window_are_forgotten(throttle, clock):
    """Only failures younger than `window` count toward slowing down and locking."""
    fail(throttle, clock, 9, every=0)
    clock.t += 900
    assert fail(throttle, clock, 1) == [0.0]
    throttle.check(IP)


def test_failures_spread_over_more_than_the_window_never_lock(throttle, clock):
    """One failure every 100 s (9 per window of 900 s) never reaches lock_after = 10."""
    fail(throttle, clock, 50, every=100)
    throttle.check(IP)


def test_success_forgets_past_failures(throttle, clock):
    """A successful AUTH clears the address's failure count."""
    fail(throttle, clock, 5)
    throttle.succeeded(IP)
    assert throttle.delay(IP) == 0.0
    assert fail(throttle, clock, 4) == [0, 0, 0, 1]

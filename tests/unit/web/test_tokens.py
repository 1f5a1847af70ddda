"""relay.web.tokens: opaque, authenticated, URL-safe unsubscribe tokens that never expire."""
from __future__ import annotations

import base64
import re

import pytest

from relay.web.tokens import MIN_SECRET_BYTES, UnsubscribeTokens

SECRET = b"0123456789abcdef-unsubscribe-secret"
RECIPIENT, DOMAIN = "jeanne.dupont@example.net", "acme.fr"


@pytest.fixture
def tokens() -> UnsubscribeTokens:
    return UnsubscribeTokens(SECRET)


def b64decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_token_reads_back_as_its_recipient_and_domain(tokens):
    """make then read round-trips, also through a fresh instance with the same secret (a restart)."""
    token = tokens.make(RECIPIENT, DOMAIN)
    assert tokens.read(token) == (RECIPIENT, DOMAIN)
    assert UnsubscribeTokens(SECRET).read(token) == (RECIPIENT, DOMAIN)


def test_tokens_are_deterministic_and_distinct_per_pair(tokens):
    """The same pair gives the same token; another recipient or domain gives another."""
    token = tokens.make(RECIPIENT, DOMAIN)
    assert tokens.make(RECIPIENT, DOMAIN) == token
    assert tokens.make("paul@example.net", DOMAIN) != token
    assert tokens.make(RECIPIENT, "other.fr") != token


def test_a_token_is_url_safe_unpadded_and_short(tokens):
    """base64url without '=', usable as one path segment; a typical pair stays under 100 chars."""
    token = tokens.make(RECIPIENT, DOMAIN)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) < 100
    long_token = tokens.make("a" * 64 + "@" + "b" * 185 + ".fr", DOMAIN)   # a 254-octet address
    assert tokens.read(long_token) == ("a" * 64 + "@" + "b" * 185 + ".fr", DOMAIN)


def test_the_address_cannot_be_read_from_the_token(tokens):
    """Neither the address, its local part nor the domain shows in the token or its decoding."""
    token = tokens.make(RECIPIENT, DOMAIN)
    raw = b64decode(token)
    for secret_part in (RECIPIENT, "jeanne", "dupont", "example.net", DOMAIN):
        assert secret_part not in token.lower()
        assert secret_part.encode() not in raw


def test_recipient_and_domain_are_compared_case_insensitively(tokens):
    """Case does not matter: mixed case gives the same token, read back lower-cased."""
    token = tokens.make("Jeanne.Dupont@Example.NET", "ACME.fr")
    assert token == tokens.make(RECIPIENT, DOMAIN)
    assert tokens.read(token) == (RECIPIENT, DOMAIN)


def test_a_token_made_with_another_secret_reads_as_none(tokens):
    other = UnsubscribeTokens(b"another-secret-of-enough-bytes")
    assert other.read(tokens.make(RECIPIENT, DOMAIN)) is None


def test_every_altered_character_makes_the_token_invalid(tokens):
    """Changing any one character of a token is detected (authenticated, not merely encoded)."""
    token = tokens.make(RECIPIENT, DOMAIN)
    for i, char in enumerate(token):
        altered = token[:i] + ("A" if char != "A" else "B") + token[i + 1:]
        assert tokens.read(altered) is None, f"altered at {i}"


def test_truncated_or_extended_tokens_are_invalid(tokens):
    token = tokens.make(RECIPIENT, DOMAIN)
    for cut in range(len(token)):
        assert tokens.read(token[:cut]) is None
    assert tokens.read(token + "A") is None
    assert tokens.read(token + "AAAA") is None


@pytest.mark.parametrize("garbage", [
    "", "=", "====", "not a token", "abc/def", "abc+def", "abc==", "%41%42",
    "A" * 5000, "\x00\x01", "é" * 20, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
])
def test_garbage_reads_as_none_without_raising(tokens, garbage):
    assert tokens.read(garbage) is None


def test_a_non_string_reads_as_none(tokens):
    assert tokens.read(None) is None          # type: ignore[arg-type]
    assert tokens.read(b"bytes") is None      # type: ignore[arg-type]


def test_only_the_canonical_spelling_of_a_token_is_accepted(tokens):
    """Padding, the standard alphabet or other unused trailing bits are refused, so one pair has
    exactly one valid token string."""
    token = tokens.make(RECIPIENT, DOMAIN)
    raw = b64decode(token)
    assert len(raw) % 3 == 2                   # so it pads with "=" and its last char has 2 spare bits
    assert tokens.read(base64.urlsafe_b64encode(raw).decode()) is None
    standard_alphabet = base64.b64encode(raw).decode().rstrip("=")
    assert standard_alphabet == token or tokens.read(standard_alphabet) is None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = [token[:-1] + c for c in alphabet
                  if token[:-1] + c != token and b64decode(token[:-1] + c) == raw]
    assert len(same_bytes) == 3
    for spelling in same_bytes:
        assert tokens.read(spelling) is None


def test_a_short_secret_is_refused():
    """HKDF is fast, so a short secret could be brute-forced offline from one token."""
    with pytest.raises(ValueError):
        UnsubscribeTokens(b"x" * (MIN_SECRET_BYTES - 1))


@pytest.mark.parametrize("recipient, domain", [("", DOMAIN), (RECIPIENT, ""), ("a\nb@x.fr", DOMAIN)])
def test_making_a_token_for_an_empty_or_multiline_value_is_an_error(tokens, recipient, domain):
    with pytest.raises(ValueError):
        tokens.make(recipient, domain)

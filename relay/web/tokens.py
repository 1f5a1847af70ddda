"""Unsubscribe tokens: the opaque, authenticated part of an RFC 8058 one-click URL.

A token names one (recipient, sender domain) pair. It is AES-SIV (RFC 5297) encryption of
`domain "\n" recipient` under a key derived from the configured secret with HKDF-SHA-256, so:

- opaque: the address cannot be read from the link (it is encrypted, and padded to a multiple
  of 16 bytes so the token length only hints at the address length);
- authenticated: a forged or altered token fails the SIV check and reads as None;
- deterministic: the same pair always gives the same token, so a message re-signed or
  re-sent carries the same link (SIV needs no nonce and stays safe when one repeats);
- permanent: no expiry is encoded, because a recipient may click the link in a mail that
  is months old and must still be unsubscribed. Rotating the secret retires every link
  at once, so keep the secret for as long as mail carrying its links may be read.

Token layout (then base64url without padding): version byte | SIV tag (16) | ciphertext.
"""
from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
MIN_SECRET_BYTES = 16          # HKDF is fast: a short secret could be guessed offline from one token
MAX_TOKEN_CHARS = 1024         # addresses are at most 254 octets (RFC 5321 4.5.3.1); refuse junk early
_KEY_INFO = b"relay unsubscribe token v1"
_BLOCK = 16
_SEPARATOR = "\n"              # can appear in neither a domain nor an SMTP path
_PAD = b"\x00"
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class UnsubscribeTokens:
    """Makes and reads unsubscribe tokens with one secret (`feedback.unsubscribe.secret_env`)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_KEY_INFO).derive(secret)
        self._aead = AESSIV(key)   # 512-bit key: AES-256-SIV

    def make(self, recipient: str, domain: str) -> str:
        """The token for `recipient` at sender `domain` (both compared case-insensitively)."""
        recipient, domain = recipient.strip().lower(), domain.strip().lower()
        if not recipient or not domain or _SEPARATOR in recipient or _SEPARATOR in domain:
            raise ValueError("an unsubscribe token needs a recipient and a domain without newlines")
        plain = f"{domain}{_SEPARATOR}{recipient}".encode()
        plain += _PAD * (-len(plain) % _BLOCK)
        return _encode(VERSION + self._aead.encrypt(plain, [VERSION]))

    def read(self, token: str) -> tuple[str, str] | None:
        """(recipient, domain) if this secret made `token`; None for anything else. Never raises."""
        raw = _decode(token)
        if raw is None or raw[:1] != VERSION:
            return None
        try:
            plain = self._aead.decrypt(raw[1:], [VERSION])
            domain, _, recipient = plain.rstrip(_PAD).decode().partition(_SEPARATOR)
        except (InvalidTag, ValueError):   # forged or altered; UnicodeDecodeError is a ValueError
            return None
        return (recipient, domain) if recipient and domain else None


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(token: object) -> bytes | None:
    """The bytes of a canonical base64url token, or None (one token string per byte string)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _ALPHABET.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _encode(raw) == token else None

"""DKIM signatures (RFC 6376) for outgoing mail, RSA-SHA256 and Ed25519-SHA256 (RFC 8463).

Owns: loading the domains' private keys, choosing the signed header fields, relaxed/relaxed
canonicalization, and producing one `DKIM-Signature` field per configured key (two keys =
dual signing). The asymmetric operation goes through OpenSSL (`cryptography`): an RSA-2048
signature costs well under a millisecond there, against ~10 ms for dkimpy's pure-Python RSA.
dkimpy stays the independent verifier (tests, `relay doctor`).

Choices, each from the RFCs:
- `c=relaxed/relaxed`, no `l=` (a length limit lets anyone append content).
- From is over-signed (listed once more than present, RFC 6376 §8.15), so a From added
  later breaks the signature.
- List-Unsubscribe and List-Unsubscribe-Post are signed when present (RFC 8058 §4).
- Trace and envelope fields (Received, Return-Path, Bcc) are never signed.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from relay import metrics

SIGNED_FIELDS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"mime-version",
    b"content-type", b"content-transfer-encoding", b"in-reply-to", b"references", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id",
)
OVERSIGNED_FIELDS = (b"from",)

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"

_WSP_RUN = re.compile(rb" [ \t]+|\t[ \t]*")     # runs a single space would not already be
_WSP_EOL = re.compile(rb"[ \t]+\r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


class KeyError_(ValueError):
    """A DKIM key file is missing, unreadable, or not a usable key."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        if self.algorithm == RSA_SHA256:
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalized data.
        return self.key.sign(hashlib.sha256(data).digest())


def load_key(domain: str, selector: str, path: Path, algorithm: str | None = None) -> SigningKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        actual = RSA_SHA256
        if key.key_size < 1024:
            raise KeyError_(f"{path}: RSA keys under 1024 bits are refused by receivers (RFC 8301)")
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        actual = ED25519_SHA256
    else:
        raise KeyError_(f"{path}: only RSA and Ed25519 keys can sign DKIM")
    if algorithm and algorithm != actual:
        raise KeyError_(f"{path} holds a {actual} key, but algorithm says {algorithm}")
    return SigningKey(domain.lower(), selector, actual, key)


def generate_key(algorithm: str = RSA_SHA256, bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=bits)
           if algorithm == RSA_SHA256 else ed25519.Ed25519PrivateKey.generate())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_record(key: SigningKey) -> str:
    """The value of the `<selector>._domainkey.<domain>` TXT record for this key."""
    public = key.key.public_key()
    if key.algorithm == RSA_SHA256:
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def txt_strings(value: str, limit: int = 255) -> list[str]:
    """Split a TXT value into character-strings of at most 255 octets (RFC 1035 §3.3.14)."""
    return [value[i:i + limit] for i in range(0, len(value), limit)] or [""]


# --- canonicalization (RFC 6376 §3.4) ------------------------------------------------

def relaxed_body(body: bytes) -> bytes:
    # Most generated bodies (base64, quoted-printable, HTML) have nothing to collapse:
    # three C-speed scans avoid a regex pass over the whole body.
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while end >= 2 and body[end - 2:end] == b"\r\n":    # empty lines at the end are ignored
        end -= 2
    return body[:end] + b"\r\n" if end else b""


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """`value` is everything after the colon, folding CRLFs included, final CRLF excluded."""
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" ")
    return name.strip().lower() + b":" + value


def body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()


# --- signing -------------------------------------------------------------------------

Header = tuple[bytes, bytes]   # (name, value after the colon, without the final CRLF)


class Signer:
    """Signs messages of the configured domains with every key each domain has."""

    def __init__(self, keys: dict[str, list[SigningKey]]) -> None:
        self._keys = {domain.lower(): k for domain, k in keys.items()}

    def keys_for(self, domain: str) -> list[SigningKey]:
        return self._keys.get(domain.lower(), [])

    def sign(self, domain: str, headers: list[Header], body: bytes,
             now: float | None = None) -> list[bytes]:
        """Return the DKIM-Signature fields (CRLF-terminated) to prepend to the message."""
        keys = self.keys_for(domain)
        if not keys:
            return []
        chosen = _choose(headers)
        names = b":".join(name for name, _ in chosen)
        canonical = b"".join(relaxed_header(n, v) + b"\r\n" for n, v in chosen if v is not None)
        bh = body_hash(body)
        timestamp = int(now if now is not None else time.time())
        out = []
        for key in keys:
            tags = (f" v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain};"
                    f" s={key.selector}; t={timestamp};\r\n\th={names.decode()};\r\n\tbh={bh};\r\n\tb=")
            unsigned = relaxed_header(b"DKIM-Signature", tags.encode())
            try:
                raw = key.sign(canonical + unsigned)
            except Exception:
                metrics.DKIM_SIGNATURES.labels(key.algorithm, "error").inc()
                raise
            metrics.DKIM_SIGNATURES.labels(key.algorithm, "ok").inc()
            signature = base64.b64encode(raw).decode()
            folded = "\r\n\t ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
            out.append(b"DKIM-Signature:" + tags.encode() + folded.encode() + b"\r\n")
        return out


def _choose(headers: list[Header]) -> list[tuple[bytes, bytes | None]]:
    """The header fields to sign, in h= order: each instance bottom-up (RFC 6376 §5.4.2),
    plus one null instance for over-signed fields."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        lower = name.strip().lower()
        if lower in SIGNED_FIELDS:
            by_name.setdefault(lower, []).append(value)
    chosen: list[tuple[bytes, bytes | None]] = []
    for lower in SIGNED_FIELDS:
        values = by_name.get(lower, [])
        for value in reversed(values):
            chosen.append((lower, value))
        if lower in OVERSIGNED_FIELDS:
            chosen.append((lower, None))
    return chosen

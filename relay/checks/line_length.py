"""Lines of at most 998 characters (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6), before signing.

Applications do send longer lines (minified HTML). Relayed as they are, the provider's MTA
may refuse them, or fold them (Postfix inserts CRLF SP), which breaks relay's DKIM
signature and with it DMARC. So, before signing, each text part holding such a line is
re-encoded as quoted-printable (RFC 2045 §6.7): lines of at most 76 characters, and the same
content once decoded. Parts already base64 or quoted-printable, and messages without long
lines, are left byte for byte as they were.
"""
from __future__ import annotations

import binascii
import email
import email.policy
import io
import logging
from email.generator import BytesGenerator

from relay.checks.content import Parsed

log = logging.getLogger("relay.acceptance")

LIMIT = 998
_POLICY = email.policy.compat32.clone(linesep="\r\n")
_PLAIN = ("", "7bit", "8bit", "binary")


def too_long(body: bytes) -> bool:
    """Whether a line (between CRLFs) is over `LIMIT`. From the start of a line, its CRLF,
    if it is short enough, is in the next LIMIT + 2 bytes: the last CRLF there is where the
    next search starts, one C-level `rfind` a kilobyte. 23 us for 100 KB of 76-character
    lines, where splitting into lines and measuring them took 137 us (a regex for 999
    characters without a line end backtracks at every position: 14 ms)."""
    end = len(body)
    start = 0
    while end - start > LIMIT:
        crlf = body.rfind(b"\r\n", start, start + LIMIT + 2)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


def shorten(parsed: Parsed) -> bool:
    """Re-encode the parts of `parsed` whose lines are too long; whether anything changed."""
    if not too_long(parsed.body):
        return False
    content_type = b"".join(parsed.get(b"Content-Type")[:1])
    if b"multipart/" not in content_type.lower():
        kind = content_type.strip().lower()
        if (kind and not kind.startswith(b"text/")) or \
                _encoding(b"".join(parsed.get(b"Content-Transfer-Encoding")[:1])) not in _PLAIN:
            return False                        # only text is line-oriented (RFC 2045 §6.7)
        parsed.body = binascii.b2a_qp(parsed.body, istext=True)
        parsed.headers = [(n, v) for n, v in parsed.headers
                          if n.lower() != b"content-transfer-encoding"]
        parsed.headers.append((b"Content-Transfer-Encoding", b" quoted-printable"))
        if not parsed.get(b"MIME-Version"):
            parsed.headers.append((b"MIME-Version", b" 1.0"))
        return True
    try:
        return _shorten_parts(parsed, content_type)
    except Exception as exc:         # a MIME structure the library cannot take apart
        log.warning("long lines left as they are: the MIME structure did not parse (%s)", exc)
        return False


def _shorten_parts(parsed: Parsed, content_type: bytes) -> bool:
    message = email.message_from_bytes(b"Content-Type:" + content_type + b"\r\n\r\n" + parsed.body,
                                       policy=_POLICY)
    if not message.is_multipart():   # no boundary found: nothing to take apart safely
        return False
    changed = False
    for part in message.walk():
        if (part.is_multipart() or part.get_content_maintype() != "text"
                or _encoding(part.get("Content-Transfer-Encoding", "")) not in _PLAIN):
            continue
        raw = part.get_payload(decode=True) or b""
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not too_long(raw):
            continue
        part.set_payload(binascii.b2a_qp(raw, istext=True).decode("ascii"))
        if "Content-Transfer-Encoding" in part:
            part.replace_header("Content-Transfer-Encoding", "quoted-printable")
        else:
            part["Content-Transfer-Encoding"] = "quoted-printable"
        changed = True
    if changed:
        out = io.BytesIO()
        BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(message)
        body = out.getvalue().split(b"\r\n\r\n", 1)[1]
        if too_long(body):           # what the library could not reach (a malformed part)
            return False
        parsed.body = body
    return changed


def _encoding(value: bytes | str) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip().lower()

"""What DATA must look like before it is signed: header sanity and the fields relay adds.

Owns: line-ending repair (bare LF becomes CRLF, so the signature covers what the
provider will see), splitting header fields from the body, exactly one From holding exactly
one address (RFC 5322 §3.6), and adding Date and Message-ID when the application left them
out (RFC 5322 §3.6.1, §3.6.4). Works on bytes: 8-bit header content passes through untouched.
"""
from __future__ import annotations

import datetime
import email.utils
import re
from dataclasses import dataclass

from relay import replies
from relay.errors import PolicyError

Header = tuple[bytes, bytes]   # (name, raw value after the colon, without the final CRLF)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")     # printable ASCII except colon (RFC 5322 §2.2)


@dataclass(slots=True)
class Parsed:
    headers: list[Header]
    body: bytes
    from_address: str

    def get(self, name: bytes) -> list[bytes]:
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]

    def serialize(self, prepend: list[bytes] = ()) -> bytes:
        """The message as bytes; `prepend` holds complete CRLF-terminated fields."""
        head = b"".join(prepend) + b"".join(n + b":" + v + b"\r\n" for n, v in self.headers)
        return head + b"\r\n" + self.body


def normalize_line_endings(data: bytes) -> bytes:
    """Bare LF and bare CR become CRLF, as they will on the wire (aiosmtplib does the same),
    so that the DKIM signature covers the bytes the provider receives."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_END.sub(b"\r\n", data)
    return data


def split(data: bytes) -> tuple[list[Header], bytes]:
    """Split a CRLF message into header fields and body.

    A line in the header section that is not a field (no colon, bad name) ends the header
    section there, as Postfix does: the rest is body, nothing is dropped. A field's value is
    sliced out once its last continuation line is known (joining as lines come would copy
    the field again for each of them: quadratic in a hostile header's length)."""
    fields: list[tuple[bytes, int, int]] = []     # name, where its value starts and ends
    pos = 0
    end = len(data)
    body = b""
    while pos < end:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            eol = end
        line = data[pos:eol]
        if not line:                                   # the empty line: body follows
            body = data[min(eol + 2, end):]
            break
        if line[:1] in (b" ", b"\t") and fields:      # folded continuation
            name, start, _ = fields[-1]
            fields[-1] = (name, start, eol)
        else:
            name, colon, _ = line.partition(b":")
            if not colon or not _FIELD_NAME.match(name):
                body = data[pos:]
                break
            fields.append((name, pos + len(name) + 1, eol))
        pos = eol + 2
    return [(name, data[start:stop]) for name, start, stop in fields], body


def parse(data: bytes) -> Parsed:
    """Check the header section; raise 550 5.6.0 when From is missing, repeated or unusable."""
    headers, body = split(normalize_line_endings(data))
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    froms = [v for n, v in headers if n.lower() == b"from"]
    if not froms:
        raise PolicyError(replies.R550_NO_FROM)
    if len(froms) > 1:
        raise PolicyError(replies.R550_MANY_FROM)
    text = froms[0].decode("utf-8", "surrogateescape").replace("\r\n", "")
    try:
        addresses = [a for _, a in email.utils.getaddresses([text]) if a]
    except RecursionError:          # comments nested a thousand deep: `email` recurses
        raise PolicyError(replies.R550_BAD_FROM, "From nests comments too deep") from None
    if len(addresses) != 1 or "@" not in addresses[0]:
        raise PolicyError(replies.R550_BAD_FROM)
    if not addresses[0].isprintable():      # undecodable 8-bit or control characters
        raise PolicyError(replies.R550_BAD_FROM, "From address is not valid UTF-8")
    return Parsed(headers, body, addresses[0])


def rfc5322_date(now: float) -> str:
    """`Sun, 22 Nov 2026 16:03:40 +0000` (UTC, said as such: not `-0000`, "zone unknown")."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))


def add_missing(parsed: Parsed, queue_id: str, now: float) -> None:
    """Add Date and Message-ID when the application did not (RFC 5322 §3.6)."""
    names = {n.lower() for n, _ in parsed.headers}
    if b"date" not in names:
        parsed.headers.append((b"Date", b" " + rfc5322_date(now).encode()))
    if b"message-id" not in names:
        domain = parsed.from_address.rpartition("@")[2].encode("utf-8", "surrogateescape")
        parsed.headers.append((b"Message-ID", b" <" + queue_id.encode() + b"@" + domain + b">"))


def received(helo: str, ip: str, hostname: str, protocol: str, queue_id: str,
             recipients: list[str], now: float) -> bytes:
    """The trace field of RFC 5321 §4.4 (recipient named only when there is one)."""
    helo = re.sub(r"[^A-Za-z0-9.\-\[\]:_]", "", helo)[:100] or "unknown"
    literal = f"IPv6:{ip}" if ":" in ip else ip                  # RFC 5321 §4.1.3
    for_clause = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    text = (f"Received: from {helo} ([{literal}])\r\n\tby {hostname} (relay) with {protocol}"
            f" id {queue_id}{for_clause};\r\n\t{rfc5322_date(now)}\r\n")
    return text.encode("utf-8", "surrogateescape")

"""Delivery status notifications (RFC 3464) -> `FeedbackEvent`s, one per recipient block.

A DSN is a `multipart/report; report-type=delivery-status` (RFC 6522): a human-readable part,
a `message/delivery-status` part (one per-message block, then one block per recipient) and
the original message or its header section. Per recipient (RFC 3464 §2.3):

    Action failed                       classify Status and Diagnostic-Code (`classify.py`):
                                        bounced_hard, bounced_soft or blocked
    Action delayed                      deferred
    Action delivered|relayed|expanded   delivered

`recipient` is the Final-Recipient (Original-Recipient if absent), of type rfc822 or utf-8
(RFC 6533; `\\x{HEX}` escapes decoded). `message_id` is the original's Message-ID, else
relay's own `X-Relay-Queue-ID` per-message field (see `relay.outbound.dsn`); `sender_domain`
is the domain of the original's From. `at` is the block's Last-Attempt-Date, else the
report's Date, else `received_at` (the caller's clock), else the current time.

Also the reading of any RFC 6522 report, which `arf.py` shares: `read_report`,
`original_message`, `identify`, `is_mailbox`, `domain_of`, `parse_date`, `header`.

    ValueError
     +-- NotAReport      not a multipart/report of the expected report-type
"""
from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import re
import time

from relay.feedback.classify import classify, feedback_kind, parse_reply
from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key

_POLICY = email.policy.default                 # decodes UTF-8 headers (RFC 6532), unfolds
_ORIGINAL_TYPES = ("message/rfc822", "message/global",
                   "text/rfc822-headers", "message/global-headers")   # RFC 6522, RFC 6533
_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")   # RFC 6533 §3 utf-8-addr-xtext
_DELIVERED = {"delivered", "relayed", "expanded"}
_ACTIONS = _DELIVERED | {"failed", "delayed"}
_REASON_MAX = 500


class NotAReport(ValueError):
    """The message is not a multipart/report of the expected report-type."""


def parse_dsn(message: bytes, received_at: float | None = None) -> list[FeedbackEvent]:
    """The events of a DSN, one per recipient block it reports on; NotAReport otherwise."""
    report = read_report(message, "delivery-status")
    per_message, blocks = _status_blocks(report)
    message_id, sender_domain = identify(original_message(report))
    message_id = message_id or header(per_message, "X-Relay-Queue-ID") or None
    reported = parse_date(header(report, "Date"))
    fallback = reported if reported is not None else (
        received_at if received_at is not None else time.time())
    report_id = header(report, "Message-ID")
    events = (_event(block, message_id, sender_domain, fallback, report_id) for block in blocks)
    return [event for event in events if event is not None]


def _status_blocks(report: email.message.Message) -> tuple[email.message.Message, list]:
    for part in report.iter_parts():   # top level only: never a DSN inside the returned original
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _blocks_of(part)
            if blocks:
                return blocks[0], blocks[1:]
    raise NotAReport("no message/delivery-status part")


def _blocks_of(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks: `email` splits message/delivery-status itself; it reads the RFC 6533
    global type (UTF-8) as one message, whose text is split here on blank lines."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [b for b in payload if isinstance(b, email.message.Message) and len(b)]
    if isinstance(payload, list):
        raw = b"".join(m.as_bytes(policy=_POLICY.clone(utf8=True)) for m in payload)
    else:
        raw = part.get_payload(decode=True) or b""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    parser = email.parser.HeaderParser(policy=_POLICY)
    return [parser.parsestr(chunk + "\n") for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]


def _event(block: email.message.Message, message_id: str | None, sender_domain: str | None,
           fallback_at: float, report_id: str) -> FeedbackEvent | None:
    recipient = _address(header(block, "Final-Recipient") or header(block, "Original-Recipient"))
    action = (header(block, "Action").split() or [""])[0].lower()
    if not recipient or action not in _ACTIONS:
        return None            # a block relay cannot attribute or act on
    status_match = _STATUS.match(header(block, "Status"))
    status = status_match.group(1) if status_match else None
    diagnostic = header(block, "Diagnostic-Code")
    if action in _DELIVERED:
        kind = FeedbackKind.DELIVERED
    elif action == "delayed":
        kind = FeedbackKind.DEFERRED
    else:
        kind, status = _failure(status, diagnostic)
    last_attempt = header(block, "Last-Attempt-Date")
    at = parse_date(last_attempt)
    return FeedbackEvent(
        kind, recipient, "dsn", at if at is not None else fallback_at, message_id,
        diagnostic[:_REASON_MAX], status,
        dedupe_key("dsn", report_id or None, message_id, recipient.lower(), action, status,
                   last_attempt or None),
        sender_domain)


def _failure(status: str | None, diagnostic: str) -> tuple[FeedbackKind, str | None]:
    """An Action: failed recipient: its kind, and the enhanced code that decided it.

    The Status field is authoritative (RFC 3464 §2.3.4); the remote's own code in an smtp
    Diagnostic-Code stands in when Status is missing or generic (X.0.0)."""
    diag_type, sep, diag_text = diagnostic.partition(";")
    if not sep:
        diag_type, diag_text = "", diagnostic
    code, enhanced, text = (parse_reply(diag_text) if diag_type.strip().lower() == "smtp"
                            else (0, None, diag_text.strip()))
    diag_is_finer = (enhanced is not None and not enhanced.endswith(".0.0")
                     and status is not None and enhanced[0] == status[0])
    if status and not (status.endswith(".0.0") and diag_is_finer):
        enhanced = status
    if enhanced and code // 100 != int(enhanced[0]):
        code = int(enhanced[0]) * 100 + 50    # the reply's class follows the status
    if code < 400:
        code = 550                            # "failed" with nothing else to go on: permanent
    klass = classify(code, enhanced, text)
    return feedback_kind(code, klass), enhanced


def _address(value: str) -> str:
    """The address of an RFC 3464 `address-type; address` field (rfc822 or utf-8)."""
    kind, sep, address = value.partition(";")
    if not sep:
        address, kind = kind, "rfc822"
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        try:
            address = _UTF8_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), address)
        except ValueError:               # past U+10FFFF: no Unicode scalar value, no mailbox
            return ""
    return address if is_mailbox(address) else ""


# --- any RFC 6522 report: shared with arf.py -------------------------------------------------

def read_report(message: bytes, report_type: str) -> email.message.Message:
    """The parsed message if it is a multipart/report of `report_type`; NotAReport otherwise."""
    try:
        parsed = email.message_from_bytes(message, policy=_POLICY)
    except RecursionError:       # `email` parses nested parts recursively: ~300 levels deep
        raise NotAReport("MIME parts nested too deep to read") from None
    if parsed.get_content_type() != "multipart/report" or not parsed.is_multipart():
        raise NotAReport(f"not a multipart/report but {parsed.get_content_type()}")
    found = (parsed.get_param("report-type") or "")
    if not isinstance(found, str) or found.strip().lower() != report_type:
        raise NotAReport(f"report-type is {found!r}, not {report_type}")
    return parsed


def original_message(report: email.message.Message) -> email.message.Message | None:
    """The returned original message, or its header section, as a Message (RFC 6522 §3)."""
    for part in report.iter_parts():
        content_type = part.get_content_type()
        if content_type not in _ORIGINAL_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):          # message/rfc822: parsed by `email` already
            return payload[0] if payload else None
        raw = part.get_payload(decode=True) or b""
        return email.parser.BytesHeaderParser(policy=_POLICY).parsebytes(raw)
    return None


def identify(original: email.message.Message | None) -> tuple[str | None, str | None]:
    """(Message-ID, domain of From) of the original message, each None when unknown."""
    if original is None:
        return None, None
    message_id = header(original, "Message-ID") or None
    return message_id, domain_of(header(original, "From"))


def is_mailbox(address: str) -> bool:
    """`local@domain`, both parts present, nothing unprintable (a control character, a lone
    surrogate from an escape) and no space in the domain: an address events may name."""
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and address.isprintable() and \
        not any(c.isspace() for c in domain)


def domain_of(value: str) -> str | None:
    """The lower-cased domain of the first address in a header value, or None."""
    for _, address in email.utils.getaddresses([value]):
        address = address.strip().strip("<>")
        if "@" in address:
            domain = address.rpartition("@")[2].strip().rstrip(".").lower()
            if domain:
                return domain
    return None


def parse_date(value: str) -> float | None:
    """An RFC 5322 date as Unix seconds (no zone: UTC), or None if it does not parse."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def header(message: email.message.Message, name: str) -> str:
    """A header's value as one line of text, "" when absent or unreadable."""
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError):   # hostile input, defensive
        return ""
    return " ".join(str(value).split()) if value is not None else ""


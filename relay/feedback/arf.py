"""Abuse Reporting Format (RFC 5965) reports -> `complained` `FeedbackEvent`s.

An ARF report is a `multipart/report; report-type=feedback-report` (RFC 6522): a
human-readable part, a `message/feedback-report` part of fields, and the original message
(`message/rfc822`) or its header section (`text/rfc822-headers`). Yahoo and Microsoft send
them from their feedback loops; Gmail does not (REFERENCE "Bounces and complaints").

    Feedback-Type abuse|fraud|other|virus   complained, one event per reported recipient
    Feedback-Type not-spam                  nothing: the user says the mail is wanted (§7.3)
    any other type (auth-failure, ...)      nothing: not a complaint about the recipient's mail

The recipients are the Original-Rcpt-To fields (§3.2, any number), else Microsoft's
`X-HmXmrOriginalRecipient` header of the original, else its To; a report that names no
recipient yields nothing, as there is no address to suppress. `sender_domain` is the domain of
the original's From, else Reported-Domain, else that of Original-Mail-From. `at` is the
Arrival-Date (Received-Date in early drafts, still sent), else the report's Date, else
`received_at` (the caller's clock), else the current time.
"""
from __future__ import annotations

import email.message
import email.parser
import email.utils
import time

from relay.feedback.dsn import (NotAReport, domain_of, header, identify, is_mailbox,
                                original_message, parse_date, read_report)
from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key

__all__ = ["NotAReport", "parse_arf", "COMPLAINT_TYPES"]

COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other", "virus"})   # RFC 5965 §7.3
_RECIPIENT_HEADERS = ("X-HmXmrOriginalRecipient", "To")             # of the original, in order


def parse_arf(message: bytes, received_at: float | None = None) -> list[FeedbackEvent]:
    """The complaints of an ARF report, one per recipient; [] for not-spam; NotAReport for
    anything that is not a feedback report."""
    report = read_report(message, "feedback-report")
    fields = _feedback_fields(report)
    feedback_type = header(fields, "Feedback-Type").lower()
    if not feedback_type:
        raise NotAReport("the feedback report has no Feedback-Type")
    if feedback_type not in COMPLAINT_TYPES:
        return []
    original = original_message(report)
    message_id, sender_domain = identify(original)
    sender_domain = (sender_domain or _plain_domain(header(fields, "Reported-Domain"))
                     or domain_of(header(fields, "Original-Mail-From")))
    arrival = header(fields, "Arrival-Date") or header(fields, "Received-Date")
    at = _first_time(arrival, header(report, "Date"), received_at)
    agent = header(fields, "User-Agent")
    reason = f"{feedback_type} report" + (f" ({agent})" if agent else "")
    report_id = header(report, "Message-ID") or None
    return [FeedbackEvent(FeedbackKind.COMPLAINED, recipient, "arf", at, message_id, reason, None,
                          dedupe_key("arf", report_id, message_id, recipient.lower(),
                                     feedback_type, arrival or None),
                          sender_domain)
            for recipient in _recipients(fields, original)]


def _feedback_fields(report: email.message.Message) -> email.message.Message:
    """The fields of the message/feedback-report part (`email` parses a message/* part as a
    message: its payload is one Message holding the fields)."""
    for part in report.iter_parts():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if payload:
                return payload[0]
            continue
        raw = part.get_payload(decode=True) or b""
        return email.parser.BytesHeaderParser(policy=report.policy).parsebytes(raw)
    raise NotAReport("no message/feedback-report part")


def _recipients(fields: email.message.Message, original: email.message.Message | None) -> list[str]:
    found = _addresses(_all(fields, "Original-Rcpt-To"))
    for name in _RECIPIENT_HEADERS:
        if found or original is None:
            break
        found = _addresses(_all(original, name))
    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address.lower(), address)
    return list(unique.values())


def _all(message: email.message.Message, name: str) -> list[str]:
    try:
        return [str(v) for v in message.get_all(name) or []]
    except (ValueError, IndexError, TypeError, AttributeError):   # hostile input, defensive
        return []


def _addresses(values: list[str]) -> list[str]:
    pairs = email.utils.getaddresses([" ".join(v.split()) for v in values])
    addresses = (a.strip().strip("<>") for _, a in pairs)
    return [a for a in addresses if is_mailbox(a)]


def _plain_domain(value: str) -> str | None:
    value = value.strip().rstrip(".").lower()
    return value if value and "@" not in value and " " not in value else None


def _first_time(arrival: str, dated: str, received_at: float | None) -> float:
    for candidate in (parse_date(arrival), parse_date(dated), received_at):
        if candidate is not None:
            return candidate
    return time.time()

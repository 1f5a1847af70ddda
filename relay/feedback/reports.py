"""Mail that reports on mail: which parser reads it. A delivery status notification
(RFC 3464) or a feedback report (RFC 5965) gives events; anything else gives none."""
from __future__ import annotations

from relay.feedback.arf import parse_arf
from relay.feedback.dsn import NotAReport, parse_dsn
from relay.feedback.events import FeedbackEvent


def read_report(message: bytes, received_at: float) -> list[FeedbackEvent]:
    for parse in (parse_dsn, parse_arf):
        try:
            return parse(message, received_at)
        except NotAReport:
            continue
    return []

"""Mail that reports on mail: which parser reads it. A delivery status notification
(RFC 3464) or a feedback report (RFC 5965) gives events (none, for a report that names
no recipient or says "not spam"); anything else raises NotAReport."""
from __future__ import annotations

from relay.feedback.arf import parse_arf
from relay.feedback.dsn import NotAReport, parse_dsn
from relay.feedback.events import FeedbackEvent

__all__ = ["NotAReport", "read_report", "ACCEPTED"]

# What a feedback address takes, as its refusal of anything else names it.
ACCEPTED = "delivery status notifications (RFC 3464) and abuse reports (RFC 5965)"


def read_report(message: bytes, received_at: float) -> list[FeedbackEvent]:
    problems = []
    for parse in (parse_dsn, parse_arf):
        try:
            return parse(message, received_at)
        except NotAReport as exc:
            problems.append(str(exc))
    raise NotAReport("; ".join(dict.fromkeys(problems)))

"""Delivery status notifications (RFC 3464) for recipients that failed for good.

The DSN goes to the envelope sender of the failed message, from the null sender `<>`
(RFC 5321 §4.5.5, so it can never cause another DSN), with a `multipart/report;
report-type=delivery-status` body: a human-readable part, the `message/delivery-status`
part with one block per failed recipient, and the original header section
(`text/rfc822-headers`). It is sent through the same route, From `mailer-daemon@<domain>`,
so the domain's DKIM keys sign it like any other message of the domain.
"""
from __future__ import annotations

import os
import re

from relay.checks.content import rfc5322_date
from relay.model import QueuedMessage, Recipient, RecipientState

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


def status_of(recipient: Recipient) -> str:
    """The RFC 3463 status for the DSN: the route's enhanced code, else one from the class."""
    code, _, text = recipient.reply.partition(" ")
    match = _ENHANCED.match(text)
    if match:
        return match.group(1)
    if recipient.state is RecipientState.EXPIRED:
        return "4.4.7"      # delivery time expired
    return "5.0.0" if code.startswith("5") else "4.0.0"


def build(original: QueuedMessage, failed: list[Recipient], reporting_mta: str,
          route_description: str, now: float) -> bytes:
    boundary = f"=_relay_dsn_{os.urandom(8).hex()}"
    domain = original.domain
    headers_end = original.body.find(b"\r\n\r\n")
    original_headers = original.body[: headers_end + 2 if headers_end >= 0 else len(original.body)]
    expired = any(r.state is RecipientState.EXPIRED for r in failed)
    lines = [
        f"From: Mail Delivery System <mailer-daemon@{domain}>",
        f"To: <{original.mail_from}>",
        "Subject: " + ("Delivery delayed too long, giving up" if expired
                       else "Undelivered Mail Returned to Sender"),
        f"Date: {rfc5322_date(now)}",
        f"Message-ID: <{original.id}.dsn.{os.urandom(4).hex()}@{domain}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Your message {original.id} could not be delivered to "
        + ("this recipient:" if len(failed) == 1 else "these recipients:"),
        "",
    ]
    for r in failed:
        lines.append(f"  <{r.address}>: {r.reply}")
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", "",
              f"Reporting-MTA: dns; {reporting_mta}",
              f"X-Relay-Queue-ID: {original.id}",
              f"Arrival-Date: {rfc5322_date(original.created)}", ""]
    for r in failed:
        action = "failed"
        lines += [f"Final-Recipient: rfc822; {r.address}", f"Action: {action}",
                  f"Status: {status_of(r)}", f"Remote-MTA: dns; {route_description.split(':')[0]}"]
        if r.reply:
            lines.append(f"Diagnostic-Code: smtp; {_one_line(r.reply)}")
        lines.append("")
    lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return head + original_headers + f"\r\n--{boundary}--\r\n".encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]

"""Every SMTP reply relay sends, as named constants.

A `Reply` knows its basic code, its RFC 3463 enhanced status code and its text; the
constructor refuses a reply whose classes disagree (a 550 with a 4.x.x code is a bug).
No other module writes a reply literal: they name one of these, optionally filling the
text's `{placeholders}` with `Reply.format`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Refusal(enum.StrEnum):
    """Why a client was refused: a refusal's `reason` (relay_messages_rejected_total)."""
    ADMISSION = "admission"          # connection limits
    AUTH = "auth"                    # credentials missing or wrong, locked out, TLS first
    SYNTAX = "syntax"                # a malformed address or command
    SENDER = "sender"                # the principal may not use that address or domain
    SPF = "spf"                      # the domain's SPF does not authorize the route
    SUPPRESSED = "suppressed"        # the recipient is on the sender domain's suppression list
    RECIPIENTS = "recipients"        # too many recipients
    SIZE = "size"                    # message too big
    HEADERS = "headers"              # From missing, repeated or unusable
    UNSUBSCRIBE = "unsubscribe_required"   # a mass send without RFC 8058 headers
    NOT_A_REPORT = "not_a_report"    # mail to a feedback listener that is no report
    CONTENT = "content"              # bulk mail over content.max_score (content.mode: refuse_bulk)
    STORAGE = "storage"              # the spool's filesystem is below spool.min_free
    TEMPORARY = "temporary"          # relay's own failure: signing, spool, internal error


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str
    reason: Refusal | None = field(default=None, compare=False)   # for refusals

    def __post_init__(self) -> None:
        klass = self.code // 100
        if klass not in (2, 3, 4, 5):
            raise ValueError(f"not an SMTP reply code: {self.code}")
        if self.enhanced and int(self.enhanced.split(".")[0]) != klass:
            raise ValueError(f"{self.code} does not match enhanced code {self.enhanced}")

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def format(self, **values: object) -> "Reply":
        """The same reply with its `{placeholders}` filled in."""
        return Reply(self.code, self.enhanced, self.text.format(**values), self.reason)

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"


# --- connection and session ---------------------------------------------------------
R421_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later", Refusal.ADMISSION)
R421_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
R421_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
R530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required", Refusal.AUTH)
R530_STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first", Refusal.AUTH)
R538_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for authentication", Refusal.AUTH)
R235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid", Refusal.AUTH)
R454_AUTH_LOCKED = Reply(454, "4.7.0", "Too many failed authentications from your address, try again later", Refusal.AUTH)
R500_COMMAND_TOO_LONG = Reply(500, "5.5.2", "Command line too long", Refusal.SYNTAX)
R500_BAD_SYNTAX = Reply(500, "5.5.2", "Syntax error", Refusal.SYNTAX)
R553_BAD_ADDRESS = Reply(553, "5.1.3", "Malformed address", Refusal.SYNTAX)
R553_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter", Refusal.SYNTAX)

# --- MAIL FROM / RCPT TO -----------------------------------------------------------
R250_OK = Reply(250, "2.0.0", "OK")
R250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
R550_NULL_SENDER = Reply(550, "5.7.1", "The null sender <> is not accepted for submission", Refusal.SENDER)
R250_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
R550_SENDER_REFUSED = Reply(550, "5.7.1", "You may not send as <{address}>", Refusal.SENDER)
R550_DOMAIN_UNKNOWN = Reply(550, "5.7.1", "Domain {domain} is not configured on this relay", Refusal.SENDER)
R550_SPF_NOT_AUTHORIZED = Reply(550, "5.7.23", "SPF of {domain} does not authorize route {route} "
                                "(result {result}): {fix}", Refusal.SPF)
R550_SPF_PERMERROR = Reply(550, "5.5.2", "SPF record of {domain} is broken: {problem}", Refusal.SPF)
R451_SPF_TEMPERROR = Reply(451, "4.4.3", "Cannot check the SPF of {domain} now (DNS), try again later", Refusal.SPF)
R550_UNSUBSCRIBED = Reply(550, "5.7.1", "<{address}> unsubscribed from mail of {domain}", Refusal.SUPPRESSED)
R550_HARD_BOUNCED = Reply(550, "5.1.1", "<{address}> bounced earlier: the mailbox does not exist", Refusal.SUPPRESSED)
R550_COMPLAINED = Reply(550, "5.7.1", "<{address}> complained about mail of {domain}", Refusal.SUPPRESSED)
R550_SOFT_BOUNCED = Reply(550, "5.2.0", "<{address}> bounced repeatedly: suppressed for {domain}", Refusal.SUPPRESSED)
R550_SUPPRESSED = Reply(550, "5.7.1", "<{address}> is on the suppression list of {domain}", Refusal.SUPPRESSED)
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients", Refusal.RECIPIENTS)
R552_SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size", Refusal.SIZE)

R250_RESET = Reply(250, "2.0.0", "Reset OK")
R501_BAD_AUTH_RESPONSE = Reply(501, "5.5.2", "Cannot decode the AUTH response")
R503_NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
R503_TLS_ACTIVE = Reply(503, "5.5.1", "Error: TLS already active")
R501_DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
R354_START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

# --- what relay writes as the route's answer when the route gave none -------------------
R451_ROUTE_UNAVAILABLE = Reply(451, "4.4.1", "{detail}")
R250_WRITTEN_TO_OUTBOX = Reply(250, "2.0.0", "written to {name}")
R553_ROUTE_NO_SMTPUTF8 = Reply(553, "5.6.7", "The route does not support SMTPUTF8")

# --- DATA ---------------------------------------------------------------------------
R552_TOO_BIG = Reply(552, "5.3.4", "Message too big for this relay ({limit} bytes at most)", Refusal.SIZE)
R550_NO_FROM = Reply(550, "5.6.0", "Message has no From header", Refusal.HEADERS)
R550_MANY_FROM = Reply(550, "5.6.0", "Message has more than one From header", Refusal.HEADERS)
R550_BAD_FROM = Reply(550, "5.6.0", "From header does not hold exactly one address", Refusal.HEADERS)
R550_FROM_REFUSED = Reply(550, "5.7.1", "You may not send as <{address}> (header From)", Refusal.SENDER)
R550_BULK_NEEDS_UNSUBSCRIBE = Reply(550, "5.7.1", "Mass mailing (more than {threshold} recipients of one "
                                    "campaign within {window}) must carry List-Unsubscribe and "
                                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)",
                                    Refusal.UNSUBSCRIBE)
R550_CONTENT = Reply(550, "5.7.1", "Bulk mail refused for its content (score {score:g} over "
                     "{max_score:g}): {findings}; see relay lint", Refusal.CONTENT)
R550_NOT_A_REPORT = Reply(550, "5.7.1", "This is a feedback address: it takes only {accepted} "
                          "and relays nothing", Refusal.NOT_A_REPORT)
R452_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later", Refusal.STORAGE)
R250_FEEDBACK = Reply(250, "2.0.0", "Ok: report read ({events} event(s), {new} new)")
R550_BAD_DMARC_REPORT = Reply(550, "5.6.0", "DMARC aggregate report refused: {problem}",
                              Refusal.NOT_A_REPORT)
R250_DMARC_REPORTS = Reply(250, "2.0.0", "Ok: {reports} DMARC aggregate report(s) read, {new} new")
R451_REPORT_NOT_STORED = Reply(451, "4.3.0", "Temporary failure storing the report, try again later",
                               Refusal.TEMPORARY)
R250_QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
R451_SIGNING_FAILED = Reply(451, "4.3.0", "Temporary failure signing the message, try again later", Refusal.TEMPORARY)
R451_SPOOL_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, try again later", Refusal.TEMPORARY)
R451_INTERNAL = Reply(451, "4.3.0", "Temporary internal error, try again later (ref {ref})", Refusal.TEMPORARY)

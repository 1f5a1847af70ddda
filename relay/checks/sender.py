"""May this principal send as this address, and does the relay know its domain?

Both the envelope sender (MAIL FROM) and the header From pass through here; the sender's
domain must have a `domains:` entry, since that is where its route and DKIM keys live.
"""
from __future__ import annotations

import re

from relay import replies
from relay.config import Domain
from relay.errors import PolicyError
from relay.model import Principal


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASCII_MAILBOX = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}(?:\.{_LABEL})+|\[[A-Za-z0-9.:]+\])$")
_UTF8_MAILBOX = re.compile(r"^[^\x00-\x20\x7f()<>\[\]:;@\\,\"]+@[^\x00-\x20\x7f()<>\[\]:;@\\,\"]+\.[^\x00-\x20\x7f()<>\[\]:;@\\,\".]+$")


def check_syntax(address: str, smtputf8: bool = False) -> None:
    """An address must be a plain Mailbox (RFC 5321 §4.1.2: dot-atom local part, host name
    or address literal); no quoting, no control characters, so nothing can ride along into
    a header or an upstream command. Non-ASCII needs SMTPUTF8 (RFC 6531)."""
    if _ASCII_MAILBOX.match(address):
        return
    if not address.isascii() and _UTF8_MAILBOX.match(address):
        if smtputf8:
            return
        raise PolicyError(replies.R553_NEEDS_SMTPUTF8, f"non-ASCII address {address!r} without SMTPUTF8")
    raise PolicyError(replies.R553_BAD_ADDRESS, f"malformed address {address!r}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def authorize(principal: Principal, address: str, domains: dict[str, Domain],
              header: bool = False, smtputf8: bool = False) -> str:
    """Return the sender domain of `address`, or raise 550 5.7.1 naming the refused address."""
    if not header:
        if address in ("", "<>"):
            raise PolicyError(replies.R550_NULL_SENDER)
        check_syntax(address, smtputf8)
    elif "@" not in address:
        raise PolicyError(replies.R550_FROM_REFUSED.format(address=address))
    if not principal.may_send_as(address):
        reply = replies.R550_FROM_REFUSED if header else replies.R550_SENDER_REFUSED
        raise PolicyError(reply.format(address=address),
                          f"{principal.username} may not send as {address}")
    domain = domain_of(address)
    if domain not in domains:
        raise PolicyError(replies.R550_DOMAIN_UNKNOWN.format(domain=domain))
    return domain

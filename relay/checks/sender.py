"""May this principal send as this address, and does the relay know its domain?

Both the envelope sender (MAIL FROM) and the header From pass through here; the sender's
domain must have a `domains:` entry, since that is where its route and DKIM keys live.
"""
from __future__ import annotations

from relay import replies
from relay.config import Domain
from relay.errors import PolicyError
from relay.model import Principal


def check_syntax(address: str) -> None:
    """An address must be local@domain (RFC 5321 §4.1.2); 553 5.1.3 otherwise."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "." not in domain.strip("[]") and not domain.startswith("["):
        raise PolicyError(replies.R553_BAD_ADDRESS, f"malformed address {address!r}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def authorize(principal: Principal, address: str, domains: dict[str, Domain],
              header: bool = False) -> str:
    """Return the sender domain of `address`, or raise 550 5.7.1 naming the refused address."""
    if not header:
        if address in ("", "<>"):
            raise PolicyError(replies.R550_NULL_SENDER)
        check_syntax(address)
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

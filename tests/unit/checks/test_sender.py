"""relay.checks.sender: who may send as which address, for MAIL FROM and header From."""
from __future__ import annotations

import pytest

from relay import replies
from relay.checks.sender import authorize, domain_of
from relay.config import Domain
from relay.errors import PolicyError
from relay.model import Principal

APP = Principal("app", frozenset({"acme.fr", "ceo@other.fr", "shop.fr"}))
DOMAINS = {"acme.fr": Domain(route="r"), "other.fr": Domain(route="r")}


def test_domain_of_is_lower_case():
    """The sender domain is what follows the last @, lower-cased."""
    assert domain_of("Alice@Acme.FR") == "acme.fr"
    assert domain_of('"a@b"@acme.fr') == "acme.fr"


def test_authorize_returns_the_sender_domain():
    """An allowed address of a configured domain yields its (lower-case) domain."""
    assert authorize(APP, "Alice@ACME.fr", DOMAINS) == "acme.fr"
    assert authorize(APP, "ceo@other.fr", DOMAINS, header=True) == "other.fr"


def test_envelope_refusal_names_the_address():
    """MAIL FROM as someone else's address: 550 5.7.1 naming it."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "sales@other.fr", DOMAINS)
    assert info.value.reply == replies.R550_SENDER_REFUSED.format(address="sales@other.fr")
    assert str(info.value.reply) == "550 5.7.1 You may not send as <sales@other.fr>"
    assert "app" in info.value.detail


def test_header_refusal_says_it_is_the_header_from():
    """The same refusal for the header From says so, so the client can tell the two apart."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "sales@other.fr", DOMAINS, header=True)
    assert str(info.value.reply) == "550 5.7.1 You may not send as <sales@other.fr> (header From)"


def test_envelope_address_without_domain_is_a_syntax_error():
    """MAIL FROM:<postmaster> is not an address relay can carry: 553 5.1.3."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "postmaster", DOMAINS)
    assert (info.value.reply.code, info.value.reply.enhanced) == (553, "5.1.3")


def test_header_from_without_domain_is_refused():
    """A header From with no domain cannot be authorized: 550 naming it."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "postmaster", DOMAINS, header=True)
    assert info.value.reply.code == 550 and "<postmaster>" in info.value.reply.text


def test_null_sender_is_refused_for_submission():
    """Applications do not send DSNs: MAIL FROM:<> gets a clear 550 5.7.1."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "<>", DOMAINS)
    assert info.value.reply.code == 550 and "null sender" in info.value.reply.text


def test_allowed_but_unconfigured_domain():
    """A sender the user may use, but whose domain has no `domains:` entry: 550 5.7.1
    naming the domain (there is no route nor DKIM key for it)."""
    with pytest.raises(PolicyError) as info:
        authorize(APP, "news@Shop.fr", DOMAINS)
    assert str(info.value.reply) == "550 5.7.1 Domain shop.fr is not configured on this relay"

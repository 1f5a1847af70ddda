"""What leaves for the provider carries DKIM signatures a receiver accepts (RFC 6376, RFC 8463):
one RSA and one Ed25519 signature per message of acme.fr, relaxed/relaxed, no body length
limit, From over-signed, the RFC 8058 unsubscribe fields covered; a domain without keys
goes out unsigned, and a route's `headers` are added to what it carries.

Signatures are checked with dkimpy, an implementation independent of relay's signer.
"""
import email
import re

import dkim
from dkim.util import parse_tag_value

from tests.conftest import message, submit

UNSUBSCRIBE = ("List-Unsubscribe: <https://acme.fr/unsub/42>, <mailto:unsub@acme.fr?subject=42>\r\n"
               "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")


def _send_and_receive(relay, upstream, mail_from="billing@acme.fr", **parts) -> bytes:
    to = parts.setdefault("to", "client@example.net")
    assert submit(relay.port("local"), mail_from, [to], message(**parts)) == {}
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message at the provider")
    return received.data


def _signatures(data: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature field, top to bottom."""
    fields = email.message_from_bytes(data).get_all("DKIM-Signature") or []
    return [parse_tag_value(re.sub(r"\s+", "", value).encode()) for value in fields]


def _signed_fields(tags: dict[bytes, bytes]) -> list[bytes]:
    return tags[b"h"].lower().split(b":")


def _verifies(data: bytes, dkim_dns, idx: int) -> bool:
    return dkim.DKIM(data).verify(idx=idx, dnsfunc=dkim_dns)


def test_dual_rsa_and_ed25519_signatures_both_verify(make_relay, upstream, dkim_dns):
    """acme.fr has an RSA and an Ed25519 key: the message carries one signature of each,
    both by d=acme.fr with their selector, both valid, relaxed/relaxed and without `l=`."""
    data = _send_and_receive(make_relay(), upstream)
    signatures = _signatures(data)
    assert sorted((s[b"a"], s[b"s"]) for s in signatures) == [(b"ed25519-sha256", b"ed1"),
                                                            (b"rsa-sha256", b"rsa1")]
    for idx, tags in enumerate(signatures):
        assert tags[b"d"] == b"acme.fr"
        assert tags[b"c"] == b"relaxed/relaxed"
        assert b"l" not in tags, "a body length limit would let anyone append content"
        assert _verifies(data, dkim_dns, idx), f"signature {idx} ({tags[b'a'].decode()}) fails"


def test_from_is_oversigned_so_an_added_from_breaks_the_signatures(make_relay, upstream, dkim_dns):
    """h= lists `from` once more than the message has From fields (RFC 6376 §8.15): a From
    prepended later makes both signatures fail, while an unsigned field added later does not."""
    data = _send_and_receive(make_relay(), upstream)
    present = len(email.message_from_bytes(data).get_all("From"))
    assert present == 1
    for tags in _signatures(data):
        assert _signed_fields(tags).count(b"from") == present + 1

    forged = b"From: Attacker <ceo@acme.fr>\r\n" + data
    assert not any(_verifies(forged, dkim_dns, idx) for idx in range(2))
    annotated = b"X-Scanned-By: something downstream\r\n" + data
    assert all(_verifies(annotated, dkim_dns, idx) for idx in range(2))


def test_list_unsubscribe_fields_are_signed_when_present(make_relay, upstream, dkim_dns):
    """List-Unsubscribe and List-Unsubscribe-Post are inside h= (RFC 8058 §4), so changing
    the one-click field invalidates the signatures."""
    data = _send_and_receive(make_relay(), upstream, extra=UNSUBSCRIBE)
    for idx, tags in enumerate(_signatures(data)):
        assert {b"list-unsubscribe", b"list-unsubscribe-post"} <= set(_signed_fields(tags))
        assert _verifies(data, dkim_dns, idx)
    tampered = data.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Never")
    assert tampered != data
    assert not any(_verifies(tampered, dkim_dns, idx) for idx in range(2))


def test_domain_without_keys_goes_out_unsigned(make_relay, upstream):
    """other.fr has no `dkim:` keys: its mail is delivered, without a DKIM-Signature."""
    relay = make_relay(users=[{"username": "erp", "networks": ["127.0.0.1/32"],
                               "senders": ["acme.fr", "other.fr"]}])
    data = _send_and_receive(relay, upstream, mail_from="news@other.fr",
                             from_addr="Other News <news@other.fr>")
    assert b"DKIM-Signature:" not in data
    assert b"From: Other News <news@other.fr>" in data


def test_route_headers_are_added_to_delivered_mail(make_relay, upstream, dkim_dns):
    """A route's `headers` (e.g. a provider's tag header) are in the delivered message, and
    the signatures still verify."""
    relay = make_relay(**{"routes.provider.headers": {"X-Mailin-Tag": "invoices",
                                                      "X-Provider-Account": "acme-42"}})
    data = _send_and_receive(relay, upstream)
    parsed = email.message_from_bytes(data)
    assert parsed.get_all("X-Mailin-Tag") == ["invoices"]
    assert parsed.get_all("X-Provider-Account") == ["acme-42"]
    assert all(_verifies(data, dkim_dns, idx) for idx in range(2))

"""Fuzzing provider webhook bodies: each parser, and the real HTTP endpoint.

Every parser in `relay.feedback.webhooks.PARSERS` returns well-formed events or raises
`WebhookPayloadError`, whatever the body: arbitrary bytes, arbitrary JSON (deep nesting,
huge numbers, lone surrogates, every type where another is expected) and mutations of the
real samples in tests/data/webhooks. Over HTTP (`POST /webhooks/<provider>` on a running
relay, every provider configured), any body and any Authorization header is answered 200,
400, 401 or 413, never 500, and the relay goes on serving.

Budgets: 200 examples per provider (5 parsers), 80 HTTP requests.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from relay.feedback import webhooks
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.feedback.fields import WebhookPayloadError
from tests.fuzz import budget

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
PROVIDERS = sorted(webhooks.PARSERS)


def _trees(provider: str) -> list:
    """The provider's samples that are JSON (some malformed ones are not, on purpose)."""
    trees = []
    for path in sorted((SAMPLES / provider).glob("*.json")):
        try:
            trees.append(json.loads(path.read_bytes()))
        except ValueError:
            pass
    return trees


SAMPLE_TREES = {p: _trees(p) for p in PROVIDERS}
TOKEN = "webhook-token-0123456789"
STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
DOMAIN = re.compile(r"^[a-z0-9_.-]+$")

_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from([10**400, -1, 0, "", "a@b.c", "gone@example.net", "\ud800@example.net",
                     "a\x00b@example.net", "a b@example.net", "@", "x@", "2016-01-27T14:59:38.237Z",
                     "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "not a time",
                     "5.1.1", "550 5.1.1 user unknown", '{"sender_domain": "acme.fr"}',
                     "[" * 5000, '{"sender": "\\ud800@acme.fr"}', "Notification", "Bounce",
                     "Permanent", "HardBounce", "hard_bounce", "bounce", "spam", "delivered"]))
_nasty_string = st.sampled_from(["", " ", "a\x00b@example.net", "a\x1b@example.net",
                                 "\ud800@example.net", "a@b@c", "@example.net", "a@", "é@é.fr",
                                 "a@example.net\r\nX: y", "\u202e@example.net", "1e999", "-1",
                                 "0001-01-01T00:00:00+23:59", "2016-13-45T99:99:99Z", "[" * 3000,
                                 '{"sender_domain": "ACME.FR."}', '{"sender_domain": "a..b"}'])
_json = st.recursive(_json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["event", "email", "ts", "ts_epoch", "time", "timestamp",
                                     "Type", "Message", "RecordType", "Email", "BouncedAt",
                                     "notificationType", "mail", "bounce", "messageId",
                                     "bounceType", "bouncedRecipients", "emailAddress",
                                     "MessageID", "message-id", "sg_event_id", "X-Mailin-custom",
                                     "CustomID", "Metadata", "From"]) | st.text(max_size=8),
                    inner, max_size=5)), max_leaves=20)


def _nodes(node, path=()):
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        yield from _nodes(value, path + (key,))


@st.composite
def mutated_sample(draw, provider: str):
    """A real sample of `provider` with 1 to 3 nodes replaced by random JSON or removed."""
    tree = copy.deepcopy(draw(st.sampled_from(SAMPLE_TREES[provider])))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _nodes(tree) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        how = draw(st.sampled_from(["replace", "remove", "poison"]))
        if how == "replace":
            parent[path[-1]] = draw(_json)
        elif how == "remove":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], str):          # a string where a string belongs
            parent[path[-1]] = draw(_nasty_string)
    if provider == "ses" and isinstance(tree, dict) and isinstance(tree.get("Message"), dict):
        tree["Message"] = json.dumps(tree["Message"])
    return tree


def _encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()     # lone surrogates as \ud800


def bodies(provider: str):
    return st.one_of(st.binary(max_size=300), _json.map(_encode),
                     mutated_sample(provider).map(_encode),
                     st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000,
                                      b"9" * 5000, b"\xff\xfe{}", b"null", b"NaN", b"[]", b"{}"]))


def check_events(events, provider: str) -> None:
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, FeedbackEvent) and isinstance(event.kind, FeedbackKind)
        assert event.source == provider
        assert "@" in event.recipient and event.recipient.isprintable(), event.recipient
        assert isinstance(event.at, float) and math.isfinite(event.at), event.at
        for text in (event.recipient, event.reason, event.message_id or ""):
            text.encode("utf-8")                         # storable: no lone surrogate
        assert event.status is None or STATUS.match(event.status), event.status
        assert event.dedupe_key.startswith(provider + ":")
        assert event.sender_domain is None or DOMAIN.match(event.sender_domain)


def parse_or_payload_error(provider: str, body: bytes) -> None:
    try:
        events = webhooks.PARSERS[provider](body)
    except WebhookPayloadError as exc:
        assert str(exc).startswith(provider), exc
        return
    check_events(events, provider)


def _parser_test(provider: str):
    @budget(200)
    @given(body=bodies(provider))
    def test(body):
        parse_or_payload_error(provider, body)
    test.__name__ = f"test_{provider}_bodies_give_events_or_a_payload_error"
    test.__doc__ = f"{provider}: events, or WebhookPayloadError naming what is wrong."
    return test


for _provider in PROVIDERS:
    globals()[f"test_{_provider}_bodies_give_events_or_a_payload_error"] = _parser_test(_provider)


def test_ses_subscription_url_never_raises():
    """Read before parsing on /webhooks/ses: any body gives a URL or None."""
    for body in (b"[" * 100_000, b'{"Type": "SubscriptionConfirmation", "SubscribeURL": "http://[x"}',
                 b"\xff", b'{"Type": "SubscriptionConfirmation", "SubscribeURL": 3}'):
        assert webhooks.ses_subscription_url(body) is None


# --- over HTTP ------------------------------------------------------------------------------

@pytest.fixture
def relay(make_relay, monkeypatch):
    monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", TOKEN)
    return make_relay(**{
        "http": {"address": "127.0.0.1", "port": 0},
        "feedback": {"webhooks": {p: {"token_env": "RELAY_WEBHOOK_TOKEN"} for p in PROVIDERS}},
    })


def raw_post(port: int, provider: str, body: bytes, authorization: bytes) -> int:
    """POST with exactly these bytes as body and Authorization header; the status code."""
    request = (b"POST /webhooks/" + provider.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nAuthorization: " + authorization + b"\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return int(response.split(b" ", 2)[1])


_authorization = st.one_of(
    st.just(b"Bearer " + TOKEN.encode()),
    st.just(b"Basic " + base64.b64encode(b"x:" + TOKEN.encode())),
    st.sampled_from([b"Bearer \xff\xfe", b"Bearer \xc3\xa9", b"Basic \xff", b"Basic !!!",
                     b"Basic " + base64.b64encode(b"\xff:\xfe"), b"", b"Bearer", b"Digest x",
                     b"Bearer " + TOKEN.encode() + b"\xff"]),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)


def test_http_endpoint_answers_every_body_and_header_without_a_500(relay):
    """Random bodies and Authorization headers to every provider's endpoint: 200, 400, 401
    or 413, never 500 (an exception in a handler); the endpoint serves a valid body after."""
    port = relay.relay.http_port

    @budget(80)
    @given(provider=st.sampled_from(PROVIDERS), data=st.data(), authorization=_authorization)
    def one(provider, data, authorization):
        body = data.draw(bodies(provider))
        status = raw_post(port, provider, body, authorization)
        assert status in (200, 400, 401, 413), (status, provider, body[:200], authorization)
    one()

    good = _encode({"event": "hard_bounce", "email": "gone@example.net", "ts_epoch": 1_732_000_000_000})
    assert raw_post(port, "brevo", good, b"Bearer " + TOKEN.encode()) == 200


# --- regressions found by the fuzzing above ----------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_nested_too_deep_is_a_payload_error(provider):
    """Regression: 100 000 nested arrays made json.loads raise RecursionError out of every
    parser (and out of ses_subscription_url): a 500 on /webhooks/<provider>. Now a 400."""
    with pytest.raises(WebhookPayloadError, match="nested too deep"):
        webhooks.PARSERS[provider](b"[" * 100_000 + b"]" * 100_000)


def test_nested_ses_message_too_deep_is_a_payload_error():
    body = json.dumps({"Type": "Notification", "Message": "[" * 100_000}).encode()
    with pytest.raises(WebhookPayloadError, match="'Message' is JSON nested too deep"):
        webhooks.parse_ses(body)


def test_a_lone_surrogate_is_a_payload_error():
    """Regression: `"\\ud800@example.net"` became a recipient that SQLite cannot store (a 500
    when the events were recorded). A string holding a lone surrogate is refused: 400."""
    body = b'{"event": "hard_bounce", "email": "\\ud800@example.net", "ts": 1}'
    with pytest.raises(WebhookPayloadError, match="lone UTF-16 surrogate"):
        webhooks.parse_brevo(body)
    pair = b'{"event": "hard_bounce", "email": "a@example.net", "reason": "\\ud83d\\ude00", "ts": 1}'
    assert webhooks.parse_brevo(pair)[0].reason == "\U0001F600"       # a valid pair is text


def test_a_bearer_token_that_is_not_utf8_is_401(relay):
    """Regression: `Authorization: Bearer \\xff\\xfe` raised UnicodeEncodeError in the token
    check: a 500. It is a wrong token: 401."""
    port = relay.relay.http_port
    good = _encode({"event": "hard_bounce", "email": "gone@example.net", "ts": 1_732_000_000})
    assert raw_post(port, "brevo", good, b"Bearer \xff\xfe") == 401
    assert raw_post(port, "brevo", good, b"Bearer " + TOKEN.encode()) == 200


@pytest.mark.parametrize("email", ["a\x00b@example.net", "a\x1b@example.net", "\u202e@example.net"])
def test_an_address_with_an_unprintable_character_is_a_payload_error(email):
    """Regression: `"a\\u0000b@example.net"` was taken as a recipient and suppressed as such."""
    body = json.dumps({"event": "hard_bounce", "email": email, "ts": 1}).encode()
    with pytest.raises(WebhookPayloadError, match="not an email address"):
        webhooks.parse_brevo(body)


def test_a_time_too_large_for_a_float_is_a_payload_error():
    """Regression: `"timestamp": 1` followed by 400 zeros (a JSON integer Python keeps
    exactly) raised OverflowError out of the parser: a 500. Now it is not a Unix time: 400."""
    body = b'[{"event": "bounce", "email": "a@example.net", "timestamp": 1' + b"0" * 400 + b"}]"
    with pytest.raises(WebhookPayloadError, match="'timestamp' is not a Unix time"):
        webhooks.parse_sendgrid(body)

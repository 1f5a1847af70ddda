"""relay.feedback.webhooks: each provider's webhook body becomes normalized feedback events."""
from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.feedback.webhooks import (PARSERS, WebhookPayloadError, parse_brevo, parse_mailjet,
                                     parse_postmark, parse_sendgrid, parse_ses,
                                     sendgrid_public_key, ses_subscription_url,
                                     verify_sendgrid_signature)

DATA = Path(__file__).parents[2] / "data" / "webhooks"
K = FeedbackKind
ACME = "acme.example.org"
BREVO_ID = "<202405011000.41837265911@smtp-relay.mailin.fr>"
MJ_ID = "288230388812245651"
SES_ID = "0107018f33b1f7aa-7b0c2d4e-1f2a-4b3c-9d8e-7f6a5b4c3d2e-000000"
SG_ID = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
PM_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


def utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()


def body(provider: str, name: str) -> bytes:
    return (DATA / provider / name).read_bytes()


# (provider, sample) -> [(kind, recipient, at, message_id, status, sender_domain)]
EXPECTED = {
    ("brevo", "hard_bounce.json"): [
        (K.BOUNCED_HARD, "gone@example.net", 1714557600.123, BREVO_ID, "5.1.1", ACME)],
    ("brevo", "soft_bounce.json"): [
        (K.BOUNCED_SOFT, "full@example.net", 1714557660.0, BREVO_ID, "4.2.2", None)],
    ("brevo", "spam.json"): [
        (K.COMPLAINED, "angry@example.net", 1714561200.0, BREVO_ID, None, ACME)],
    ("brevo", "unsubscribed.json"): [
        (K.UNSUBSCRIBED, "bye@example.net", 1714564800.0, BREVO_ID, None, ACME)],
    ("brevo", "delivered.json"): [
        (K.DELIVERED, "reader@example.net", 1714557601.5, BREVO_ID, None, ACME)],
    ("brevo", "blocked.json"): [
        (K.BLOCKED, "blocked@example.net", 1714557602.0, BREVO_ID, None, ACME)],
    ("brevo", "deferred.json"): [
        (K.DEFERRED, "later@example.net", 1714557603.0, BREVO_ID, "4.7.0", ACME)],
    ("brevo", "opened.json"): [],
    ("brevo", "request.json"): [],
    ("mailjet", "bounce_hard.json"): [
        (K.BOUNCED_HARD, "gone@example.net", 1714557600.0, MJ_ID, None, ACME)],
    ("mailjet", "bounce_soft.json"): [
        (K.BOUNCED_SOFT, "full@example.net", 1714557660.0, MJ_ID, "4.2.2", ACME)],
    ("mailjet", "blocked.json"): [
        (K.BLOCKED, "blocked@example.net", 1714557700.0, MJ_ID, None, None)],
    ("mailjet", "spam.json"): [
        (K.COMPLAINED, "angry@example.net", 1714561200.0, MJ_ID, None, None)],
    ("mailjet", "unsub.json"): [
        (K.UNSUBSCRIBED, "bye@example.net", 1714564800.0, MJ_ID, None, None)],
    ("mailjet", "sent.json"): [
        (K.DELIVERED, "reader@example.net", 1714557601.0, MJ_ID, "2.0.0", None)],
    ("mailjet", "open.json"): [],
    ("mailjet", "batch.json"): [
        (K.DELIVERED, "reader@example.net", 1714557601.0, MJ_ID, "2.0.0", None),
        (K.BOUNCED_HARD, "gone@example.net", 1714557600.0, MJ_ID, None, ACME),
        (K.COMPLAINED, "angry@example.net", 1714561200.0, MJ_ID, None, None),
        (K.UNSUBSCRIBED, "bye@example.net", 1714564800.0, MJ_ID, None, None)],
    ("ses", "bounce_permanent.json"): [
        (K.BOUNCED_HARD, "gone@example.net", utc("2024-05-01T10:00:00.237"), SES_ID, "5.1.1", ACME),
        (K.BOUNCED_HARD, "nobody@example.net", utc("2024-05-01T10:00:00.237"), SES_ID, "5.1.1",
         ACME)],
    ("ses", "raw_bounce.json"): [
        (K.BOUNCED_HARD, "gone@example.net", utc("2024-05-01T10:00:00.237"), SES_ID, "5.1.1", ACME),
        (K.BOUNCED_HARD, "nobody@example.net", utc("2024-05-01T10:00:00.237"), SES_ID, "5.1.1",
         ACME)],
    ("ses", "bounce_transient.json"): [
        (K.BOUNCED_SOFT, "full@example.net", utc("2024-05-01T10:01:00"), SES_ID, "4.2.2", ACME)],
    ("ses", "complaint.json"): [
        (K.COMPLAINED, "angry@example.net", utc("2024-05-01T11:00:00"), SES_ID, None, ACME)],
    ("ses", "complaint_not_spam.json"): [],
    ("ses", "delivery.json"): [
        (K.DELIVERED, "reader@example.net", utc("2024-05-01T10:00:00.8"), SES_ID, "2.0.0", ACME)],
    ("ses", "delivery_delay.json"): [
        (K.DEFERRED, "later@example.net", utc("2024-05-01T10:30:00"), SES_ID, "4.4.1", ACME)],
    ("ses", "open.json"): [],
    ("ses", "subscription_confirmation.json"): [],
    ("sendgrid", "bounce.json"): [
        (K.BOUNCED_HARD, "gone@example.net", 1714557600.0, SG_ID, "5.1.1", None)],
    ("sendgrid", "blocked.json"): [
        (K.BLOCKED, "blocked@example.net", 1714557610.0, SG_ID, "5.7.1", None)],
    ("sendgrid", "dropped.json"): [
        (K.BOUNCED_HARD, "gone@example.net", 1714557620.0, SG_ID, "5.0.0", None),
        (K.BLOCKED, "bye@example.net", 1714557630.0, SG_ID, "5.0.0", None)],
    ("sendgrid", "spamreport.json"): [
        (K.COMPLAINED, "angry@example.net", 1714561200.0, SG_ID, None, None)],
    ("sendgrid", "unsubscribe.json"): [
        (K.UNSUBSCRIBED, "bye@example.net", 1714564800.0, SG_ID, None, None),
        (K.UNSUBSCRIBED, "bye2@example.net", 1714564900.0, SG_ID, None, None)],
    ("sendgrid", "delivered.json"): [
        (K.DELIVERED, "reader@example.net", 1714557601.0, SG_ID, "2.0.0", None)],
    ("sendgrid", "deferred.json"): [
        (K.DEFERRED, "later@example.net", 1714557640.0, SG_ID, "4.7.0", None)],
    ("sendgrid", "open.json"): [],
    ("sendgrid", "batch.json"): [
        (K.DELIVERED, "reader@example.net", 1714557601.0, SG_ID, "2.0.0", None),
        (K.BOUNCED_HARD, "gone@example.net", 1714557600.0, SG_ID, "5.1.1", None),
        (K.COMPLAINED, "angry@example.net", 1714561200.0, SG_ID, None, None),
        (K.BOUNCED_HARD, "gone2@example.net", 1714557650.0, SG_ID, "5.1.1", ACME)],
    ("postmark", "bounce_hard.json"): [
        (K.BOUNCED_HARD, "gone@example.net", utc("2024-05-01T10:00:00.123"), PM_ID, "5.1.1", ACME)],
    ("postmark", "bounce_soft.json"): [
        (K.BOUNCED_SOFT, "full@example.net", utc("2024-05-01T10:01:00.907025"), PM_ID, "4.2.2",
         ACME)],
    ("postmark", "bounce_autoresponder.json"): [],
    ("postmark", "spam_complaint.json"): [
        (K.COMPLAINED, "angry@example.net", utc("2024-05-01T11:00:00"), PM_ID, None, ACME)],
    ("postmark", "subscription_change.json"): [
        (K.UNSUBSCRIBED, "bye@example.net", utc("2024-05-01T12:00:00.416071"), PM_ID, None, None)],
    ("postmark", "subscription_change_reactivated.json"): [],
    ("postmark", "delivery.json"): [
        (K.DELIVERED, "reader@example.net", utc("2024-05-01T10:00:01"), PM_ID, "2.0.0", None)],
    ("postmark", "open.json"): [],
}

DUPLICATES = ("sendgrid", "duplicates.json")   # checked by its own test below
MALFORMED = [
    ("brevo", "malformed_missing_email.json", "'email'"),
    ("brevo", "malformed_not_json.json", "not JSON"),
    ("mailjet", "malformed_missing_email.json", "'email'"),
    ("mailjet", "malformed_wrong_shape.json", "not an object"),
    ("ses", "malformed_message_not_json.json", "'Message' is not JSON"),
    ("ses", "malformed_missing_email.json", "'emailAddress'"),
    ("sendgrid", "malformed_object.json", "array"),
    ("sendgrid", "malformed_missing_email.json", "'email'"),
    ("sendgrid", "malformed_truncated.json", "not JSON"),
    ("postmark", "malformed_missing_email.json", "'Email'"),
    ("postmark", "malformed_array.json", "not an object"),
]


def summary(event: FeedbackEvent) -> tuple:
    return (event.kind, event.recipient, event.at, event.message_id, event.status,
            event.sender_domain)


@pytest.mark.parametrize(("provider", "name"), sorted(EXPECTED),
                         ids=[f"{p}/{n}" for p, n in sorted(EXPECTED)])
def test_each_sample_gives_its_events(provider, name):
    """Every sample maps onto the normalized kinds; opens, clicks and the like give nothing."""
    events = PARSERS[provider](body(provider, name))
    assert [summary(e) for e in events] == EXPECTED[provider, name]
    assert all(e.source == provider for e in events)
    assert len({e.dedupe_key for e in events}) == len(events)   # distinct events, distinct keys


def test_every_sample_file_is_checked():
    """A sample added to tests/data/webhooks without an expectation fails here."""
    on_disk = {(p.parent.name, p.name) for p in DATA.glob("*/*.json")}
    assert on_disk == set(EXPECTED) | {(p, n) for p, n, _ in MALFORMED} | {DUPLICATES}


def test_parsers_are_named_by_provider():
    assert PARSERS == {"brevo": parse_brevo, "mailjet": parse_mailjet, "ses": parse_ses,
                       "sendgrid": parse_sendgrid, "postmark": parse_postmark}


@pytest.mark.parametrize(("provider", "name", "says"), MALFORMED,
                         ids=[f"{p}/{n}" for p, n, _ in MALFORMED])
def test_a_malformed_body_raises_naming_what_is_wrong(provider, name, says):
    """All or nothing: a batch with one bad item gives no events at all, only the error."""
    with pytest.raises(WebhookPayloadError, match=says) as caught:
        PARSERS[provider](body(provider, name))
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("raw", [b"", b"null", b"42", b'"text"', b"\xff\xfe", b"[1, 2]"])
@pytest.mark.parametrize("provider", sorted(PARSERS))
def test_bodies_of_the_wrong_shape_are_refused_by_every_parser(provider, raw):
    with pytest.raises(WebhookPayloadError):
        PARSERS[provider](raw)


@pytest.mark.parametrize(("provider", "event"), [
    ("brevo", {"event": "hard_bounce", "email": "a@example.net"}),
    ("brevo", {"event": "spam", "email": "not-an-address", "ts_epoch": 1}),
    ("brevo", {"email": "a@example.net", "ts_epoch": 1}),
    ("mailjet", {"event": "bounce", "email": "a@example.net", "time": "yesterday"}),
    ("mailjet", {"event": "spam", "email": "a@example.net", "time": float("nan")}),
    ("sendgrid", [{"event": "bounce", "email": "a@example.net", "timestamp": True}]),
    ("postmark", {"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@example.net",
                  "BouncedAt": "last tuesday"}),
], ids=["brevo-no-time", "brevo-bad-address", "brevo-no-event", "mailjet-time-text",
        "mailjet-time-nan", "sendgrid-time-bool", "postmark-bad-date"])
def test_counted_events_need_an_event_a_recipient_and_a_time(provider, event):
    with pytest.raises(WebhookPayloadError):
        PARSERS[provider](json.dumps(event).encode())


def test_unknown_event_names_are_skipped_not_refused():
    """A provider's new event type must not be answered 400 (it would retry it forever)."""
    assert parse_brevo(b'{"event": "proxy_open", "email": "a@example.net"}') == []
    assert parse_sendgrid(b'[{"event": "machine_open"}, {"event": "click"}]') == []
    assert parse_postmark(b'{"RecordType": "Click", "Recipient": "a@example.net"}') == []
    assert parse_mailjet(b"[]") == []


def test_ses_bounce_types_map_to_hard_and_soft():
    """Permanent -> bounced_hard; Transient and Undetermined -> bounced_soft."""
    message = json.loads(json.loads(body("ses", "bounce_transient.json"))["Message"])
    message["bounce"]["bounceType"] = "Undetermined"
    assert [e.kind for e in parse_ses(json.dumps(message).encode())] == [K.BOUNCED_SOFT]
    message["bounce"]["bounceType"] = "Sideways"
    with pytest.raises(WebhookPayloadError, match="bounceType"):
        parse_ses(json.dumps(message).encode())


def test_ses_subscription_confirmation_exposes_its_url_and_gives_no_events():
    raw = body("ses", "subscription_confirmation.json")
    assert parse_ses(raw) == []
    assert ses_subscription_url(raw) == json.loads(raw)["SubscribeURL"]
    assert ses_subscription_url(raw).startswith("https://sns.eu-west-3.amazonaws.com/")


@pytest.mark.parametrize("url", ["https://sns.evil.example/?Action=ConfirmSubscription",
                                 "http://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription",
                                 "https://sns.eu-west-3.amazonaws.com.evil.example/",
                                 "https://sns.eu-west-3.amazonaws.com@evil.example/",
                                 "https://[sns.eu-west-3.amazonaws.com/", 42])
def test_a_subscribe_url_not_on_sns_is_not_shown_to_the_operator(url):
    envelope = json.loads(body("ses", "subscription_confirmation.json"))
    envelope["SubscribeURL"] = url
    assert ses_subscription_url(json.dumps(envelope).encode()) is None


@pytest.mark.parametrize("name", ["bounce_permanent.json", "delivery.json"])
def test_only_a_subscription_confirmation_has_a_subscribe_url(name):
    assert ses_subscription_url(body("ses", name)) is None
    assert ses_subscription_url(b"not json") is None


def test_reasons_keep_the_providers_text():
    assert parse_brevo(body("brevo", "hard_bounce.json"))[0].reason.startswith("550 5.1.1")
    assert parse_mailjet(body("mailjet", "bounce_hard.json"))[0].reason == "recipient: user unknown"
    assert parse_ses(body("ses", "complaint.json"))[0].reason == "abuse"
    assert parse_ses(body("ses", "bounce_transient.json"))[0].reason == \
        "smtp; 452 4.2.2 mailbox full"
    assert parse_sendgrid(body("sendgrid", "dropped.json"))[1].reason == "Unsubscribed Address"
    assert parse_postmark(body("postmark", "spam_complaint.json"))[0].reason == \
        "Test spam complaint details"


# --- duplicates ------------------------------------------------------------------------

@pytest.mark.parametrize(("provider", "name"), [
    ("brevo", "hard_bounce.json"), ("mailjet", "batch.json"), ("ses", "bounce_permanent.json"),
    ("sendgrid", "batch.json"), ("postmark", "bounce_hard.json"),
    ("postmark", "subscription_change.json"), ("ses", "delivery.json")])
def test_a_redelivered_body_gives_the_same_dedupe_keys(provider, name):
    """Providers retry: the same event re-serialized (other key order, spacing) is a duplicate."""
    raw = body(provider, name)
    reshaped = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    first, again = PARSERS[provider](raw), PARSERS[provider](reshaped)
    assert [e.dedupe_key for e in first] == [e.dedupe_key for e in again]
    assert first == again


def test_sendgrid_duplicates_in_one_batch_share_their_sg_event_id_key():
    first, second = parse_sendgrid(body(*DUPLICATES))
    assert first.dedupe_key == second.dedupe_key


def test_ses_bounce_with_and_without_the_sns_envelope_are_duplicates():
    """Switching a subscription to raw message delivery must not count a bounce twice."""
    wrapped = parse_ses(body("ses", "bounce_permanent.json"))
    raw = parse_ses(body("ses", "raw_bounce.json"))
    assert [e.dedupe_key for e in wrapped] == [e.dedupe_key for e in raw]


def test_brevo_events_differing_in_kind_or_time_are_not_duplicates():
    event = json.loads(body("brevo", "soft_bounce.json"))
    first = parse_brevo(json.dumps(event).encode())[0]
    an_hour_later = {**event, "ts_epoch": event["ts_epoch"] + 3_600_000}
    later = parse_brevo(json.dumps(an_hour_later).encode())[0]
    hard = parse_brevo(json.dumps({**event, "event": "hard_bounce"}).encode())[0]
    assert len({first.dedupe_key, later.dedupe_key, hard.dedupe_key}) == 3


def test_brevo_ts_epoch_in_seconds_is_read_as_seconds():
    """Brevo documents milliseconds but its own example shows seconds: both give the same time."""
    event = json.loads(body("brevo", "spam.json"))
    event["ts_epoch"] //= 1000
    assert parse_brevo(json.dumps(event).encode())[0].at == 1714561200.0


def test_keys_from_different_providers_never_collide():
    keys = {e.dedupe_key for (p, n) in EXPECTED for e in PARSERS[p](body(p, n))}
    assert all(k.split(":", 1)[0] in PARSERS for k in keys)


# --- SendGrid's signature --------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key, timestamp: str, raw: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()


def test_a_valid_sendgrid_signature_verifies(signing_key):
    raw, ts = body("sendgrid", "batch.json"), "1714557700"
    assert verify_sendgrid_signature(public_pem(signing_key), sign(signing_key, ts, raw), ts, raw)


def test_the_key_as_sendgrid_shows_it_bare_base64_der_works_too(signing_key):
    der = signing_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    raw, ts = body("sendgrid", "bounce.json"), "1714557700"
    assert verify_sendgrid_signature(base64.b64encode(der), sign(signing_key, ts, raw), ts, raw)


@pytest.mark.parametrize("tamper", ["body", "timestamp", "other_key", "garbled", "not_base64",
                                    "empty"])
def test_an_invalid_sendgrid_signature_is_refused(signing_key, tamper):
    raw, ts = body("sendgrid", "batch.json"), "1714557700"
    signature, key_pem = sign(signing_key, ts, raw), public_pem(signing_key)
    if tamper == "body":
        raw = raw.replace(b"gone@example.net", b"gone@example.com")
    elif tamper == "timestamp":
        ts = "1714557701"
    elif tamper == "other_key":
        key_pem = public_pem(ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "garbled":
        signature = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    elif tamper == "not_base64":
        signature = "not base64 at all!"
    else:
        signature = ""
    assert verify_sendgrid_signature(key_pem, signature, ts, raw) is False


@pytest.mark.parametrize("key", [b"", b"not a key",
                                 b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_a_key_that_is_not_a_public_key_is_a_configuration_error(key):
    with pytest.raises(ValueError, match="not a public key"):
        sendgrid_public_key(key)


@pytest.mark.parametrize("other", [lambda: ec.generate_private_key(ec.SECP384R1()),
                                   ed25519.Ed25519PrivateKey.generate], ids=["p384", "ed25519"])
def test_only_a_p256_key_is_accepted(other):
    with pytest.raises(ValueError, match="P-256"):
        sendgrid_public_key(public_pem(other()))

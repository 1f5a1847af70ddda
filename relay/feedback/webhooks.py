"""Provider webhook bodies -> `FeedbackEvent`s: one parser per provider, and SendGrid's signature.

    parse_brevo     one object per POST (an array if batched)  dedupe: message-id, event, email, ts
    parse_mailjet   an object or an array of them               dedupe: MessageID, event, email, ts
    parse_ses       an SNS envelope, `Message` is SES's JSON    dedupe: feedbackId, else messageId
    parse_sendgrid  an array of objects                         dedupe: sg_event_id
    parse_postmark  one object, `RecordType` says which         dedupe: ID, else MessageID + time
    PARSERS         the five above by provider name, as `/webhooks/{name}` is routed
    ses_subscription_url, verify_sendgrid_signature, sendgrid_public_key

Formats: REFERENCE.md "Providers". How each provider's event names map onto `FeedbackKind` is
data (the `*_KINDS` tables below); an event a table does not name (opened, click, processed,
a name the provider adds next year) is skipped rather than refused, so the provider does not
retry it forever. A body that is not JSON, has the wrong shape, or lacks what a counted event
needs (its recipient, its time) raises `WebhookPayloadError` naming the field, and nothing of
that body is returned: the caller answers 400 and records nothing.

`message_id` is the provider's own message id (Brevo's `message-id`, Mailjet's `MessageID`,
SES's `mail.messageId`, SendGrid's `sg_message_id`, Postmark's `MessageID`). `sender_domain`
is filled when the payload names the sender: SES `mail.source`, Postmark `From`, or a custom
field relay can set (Brevo `X-Mailin-custom`, Mailjet `CustomID`/`Payload`, Postmark
`Metadata`, SendGrid custom args) holding an address or a JSON object with a `sender_domain`,
`sender`, `from` or `source` key; otherwise None.

    ValueError
     +-- WebhookPayloadError     the body cannot be read as this provider's webhook
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay.feedback import fields
from relay.feedback.events import FeedbackEvent, FeedbackKind, dedupe_key
from relay.feedback.fields import WebhookPayloadError

K = FeedbackKind

BREVO_KINDS = {
    "delivered": K.DELIVERED, "deferred": K.DEFERRED,
    "hard_bounce": K.BOUNCED_HARD, "invalid_email": K.BOUNCED_HARD,
    "soft_bounce": K.BOUNCED_SOFT,
    "blocked": K.BLOCKED,   # Brevo refused to send (its own blocklist): not the address's fault
    "spam": K.COMPLAINED, "unsubscribed": K.UNSUBSCRIBED,
}   # skipped: request (accepted by Brevo, not delivered), error (Brevo's side), opened, click...
MAILJET_KINDS = {"sent": K.DELIVERED, "bounce": K.BOUNCED_SOFT, "blocked": K.BLOCKED,
                 "spam": K.COMPLAINED, "unsub": K.UNSUBSCRIBED}   # bounce: hard_bounce decides
SES_BOUNCE_KINDS = {"Permanent": K.BOUNCED_HARD, "Transient": K.BOUNCED_SOFT,
                    "Undetermined": K.BOUNCED_SOFT}
SES_NOT_A_COMPLAINT = {"not-spam"}   # RFC 5965 §7.3 feedback type: the user says it is wanted
SENDGRID_KINDS = {"delivered": K.DELIVERED, "deferred": K.DEFERRED, "bounce": K.BOUNCED_HARD,
                  "dropped": K.BLOCKED, "spamreport": K.COMPLAINED,
                  "unsubscribe": K.UNSUBSCRIBED, "group_unsubscribe": K.UNSUBSCRIBED}
SENDGRID_BOUNCE_TYPES = {"bounce": K.BOUNCED_HARD, "blocked": K.BLOCKED}
# dropped: SendGrid did not try. Only a known-dead address is a hard bounce; the rest (its own
# unsubscribe/spam lists, quota, content) already came as events or is not the address's fault.
SENDGRID_DROPPED_HARD = re.compile(r"^\s*(bounced address|invalid)\s*$", re.IGNORECASE)
POSTMARK_BOUNCE_KINDS = {
    "HardBounce": K.BOUNCED_HARD, "BadEmailAddress": K.BOUNCED_HARD,
    "SoftBounce": K.BOUNCED_SOFT, "Transient": K.BOUNCED_SOFT, "DnsError": K.BOUNCED_SOFT,
    "Unknown": K.BOUNCED_SOFT,
    "Blocked": K.BLOCKED, "DMARCPolicy": K.BLOCKED,
    "SpamComplaint": K.COMPLAINED, "Unsubscribe": K.UNSUBSCRIBED,
}   # skipped: AutoResponder, AddressChange, ChallengeVerification, ManuallyDeactivated...

SNS_SUBSCRIBE_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


# --- Brevo ---------------------------------------------------------------------------------

def parse_brevo(body: bytes) -> list[FeedbackEvent]:
    """Brevo transactional webhook: `event`, `email`, `message-id`, `ts_epoch`, `reason`."""
    return _each("brevo", fields.load(body, "brevo"), _brevo_event)


def _brevo_event(obj: dict, where: str) -> FeedbackEvent | None:
    event = fields.required_str(obj, "event", where)
    kind = BREVO_KINDS.get(event)
    if kind is None:
        return None
    recipient, at = fields.recipient(obj, "email", where), _brevo_time(obj, where)
    message_id, reason = fields.optional_str(obj, "message-id"), fields.text(obj.get("reason"))
    return FeedbackEvent(
        kind, recipient, "brevo", at, message_id, reason, fields.status(None, reason),
        dedupe_key("brevo", message_id, event, recipient, at),
        fields.sender_domain(obj.get("X-Mailin-custom"), obj))


def _brevo_time(obj: dict, where: str) -> float:
    """`ts_epoch` (ms, UTC) when present, else `ts_event` or `ts` (seconds)."""
    if "ts_epoch" in obj:
        value = fields.number(obj, "ts_epoch", where)
        # documented as milliseconds, but Brevo's own example shows seconds: 1e11 s is year 5138
        return value / 1000 if value > 1e11 else value
    for field in ("ts_event", "ts"):
        if field in obj:
            return fields.number(obj, field, where)
    raise WebhookPayloadError(f"{where}: missing 'ts_epoch'")


# --- Mailjet -------------------------------------------------------------------------------

def parse_mailjet(body: bytes) -> list[FeedbackEvent]:
    """Mailjet event API: `event`, `email`, `time`, `MessageID`, `CustomID`, `Payload`."""
    return _each("mailjet", fields.load(body, "mailjet"), _mailjet_event)


def _mailjet_event(obj: dict, where: str) -> FeedbackEvent | None:
    event = fields.required_str(obj, "event", where)
    kind = MAILJET_KINDS.get(event)
    if kind is None:
        return None
    if event == "bounce" and obj.get("hard_bounce") is True:
        kind = K.BOUNCED_HARD
    recipient, at = fields.recipient(obj, "email", where), fields.number(obj, "time", where)
    message_id = fields.text(obj.get("MessageID")) or None   # a 64-bit integer in JSON
    reason = _mailjet_reason(obj)
    return FeedbackEvent(
        kind, recipient, "mailjet", at, message_id, reason,
        fields.status(None, reason, fields.text(obj.get("comment"))),
        dedupe_key("mailjet", message_id, event, recipient, at),
        fields.sender_domain(obj.get("CustomID"), obj.get("Payload")))


def _mailjet_reason(obj: dict) -> str:
    """`error_related_to: error` for bounces and blocks, the SMTP reply for `sent`."""
    related, error = fields.text(obj.get("error_related_to")), fields.text(obj.get("error"))
    if error:
        return f"{related}: {error}" if related else error
    return fields.text(obj.get("smtp_reply")) or fields.text(obj.get("source"))


# --- Amazon SES via SNS --------------------------------------------------------------------

def parse_ses(body: bytes) -> list[FeedbackEvent]:
    """An SNS notification carrying an SES Bounce, Complaint, Delivery or DeliveryDelay.

    A SubscriptionConfirmation (or UnsubscribeConfirmation) carries no events: see
    `ses_subscription_url`. A body without the SNS envelope (SNS "raw message delivery") is
    read as the SES notification itself.
    """
    envelope = fields.load(body, "ses")
    if not isinstance(envelope, dict):
        raise WebhookPayloadError("ses: expected a JSON object (the SNS envelope)")
    if "Type" not in envelope and ("notificationType" in envelope or "eventType" in envelope):
        return _ses_events(envelope)
    kind = fields.required_str(envelope, "Type", "ses")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return []
    if kind != "Notification":
        raise WebhookPayloadError(f"ses: unknown SNS Type {kind!r}")
    message = fields.load(fields.required_str(envelope, "Message", "ses"), "ses", "'Message'")
    if not isinstance(message, dict):
        raise WebhookPayloadError("ses: 'Message' is not a JSON object")
    return _ses_events(message)


def ses_subscription_url(body: bytes) -> str | None:
    """The SubscribeURL of an SNS SubscriptionConfirmation, for the operator to open.

    None for any other body, and for a URL that is not https://sns.<region>.amazonaws.com,
    so a forged confirmation cannot put a link of its choosing in front of the operator.
    """
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict) or envelope.get("Type") != "SubscriptionConfirmation":
        return None
    url = envelope.get("SubscribeURL")
    if not isinstance(url, str):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:   # e.g. an unbalanced "[" in the host
        return None
    return url if parts.scheme == "https" and SNS_SUBSCRIBE_HOST.match(host) else None


def _ses_events(message: dict) -> list[FeedbackEvent]:
    """SES notifications (`notificationType`) and event publishing (`eventType`) alike."""
    notification = message.get("notificationType", message.get("eventType"))
    if not isinstance(notification, str):
        raise WebhookPayloadError("ses: missing 'notificationType'")
    reader = _SES_READERS.get(notification)
    if reader is None:
        return []   # Send, Reject, Open, Click, Rendering Failure, Subscription...
    section_name, read = reader
    mail = fields.required_object(message, "mail", "ses")
    message_id = fields.required_str(mail, "messageId", "ses mail")
    section = fields.required_object(message, section_name, "ses")
    at, sender_domain = _ses_time(section, mail), fields.sender_domain(mail.get("source"))
    return [FeedbackEvent(kind, recipient, "ses", at, message_id, reason, status,
                          _ses_key(section_name, section, message_id, recipient, at),
                          sender_domain)
            for kind, recipient, reason, status in read(section)]


Row = tuple[FeedbackKind, str, str, str | None]   # (kind, recipient, reason, status)


def _ses_bounce(bounce: dict) -> list[Row]:
    bounce_type = fields.required_str(bounce, "bounceType", "ses bounce")
    kind = SES_BOUNCE_KINDS.get(bounce_type)
    if kind is None:
        raise WebhookPayloadError(f"ses bounce: unknown bounceType {bounce_type!r}")
    return _ses_recipients(bounce, "bouncedRecipients", kind, "bounceSubType")


def _ses_complaint(complaint: dict) -> list[Row]:
    feedback_type = fields.text(complaint.get("complaintFeedbackType"))
    if feedback_type in SES_NOT_A_COMPLAINT:
        return []
    return _ses_recipients(complaint, "complainedRecipients", K.COMPLAINED, "complaintFeedbackType")


def _ses_delay(delay: dict) -> list[Row]:
    return _ses_recipients(delay, "delayedRecipients", K.DEFERRED, "delayType")


def _ses_delivery(delivery: dict) -> list[Row]:
    """Deliveries list bare addresses, and one SMTP reply for all of them."""
    reason = fields.text(delivery.get("smtpResponse"))
    addresses = fields.nonempty_list(delivery, "recipients", "ses delivery")
    return [(K.DELIVERED, fields.address(address, f"ses delivery recipients[{i}]"), reason,
             fields.status(None, reason)) for i, address in enumerate(addresses)]


def _ses_recipients(section: dict, field: str, kind: FeedbackKind, summary: str) -> list[Row]:
    """One row per `{emailAddress, status, diagnosticCode}`; the reason falls back to the
    section's own summary (`bounceSubType`, `complaintFeedbackType`, `delayType`)."""
    rows = []
    for i, rcpt in enumerate(fields.nonempty_list(section, field, f"ses {field}")):
        where = f"ses {field}[{i}]"
        recipient = fields.recipient(fields.as_object(rcpt, where), "emailAddress", where)
        reason = fields.text(rcpt.get("diagnosticCode")) or fields.text(section.get(summary))
        status = fields.status(fields.text(rcpt.get("status")), reason)
        rows.append((kind, recipient, reason, status))
    return rows


_SES_READERS: dict[str, tuple[str, Callable[[dict], list[Row]]]] = {
    "Bounce": ("bounce", _ses_bounce), "Complaint": ("complaint", _ses_complaint),
    "Delivery": ("delivery", _ses_delivery), "DeliveryDelay": ("deliveryDelay", _ses_delay),
}


def _ses_time(section: dict, mail: dict) -> float:
    for obj, where in ((section, "ses"), (mail, "ses mail")):
        if "timestamp" in obj:
            return fields.iso_time(obj, "timestamp", where)
    raise WebhookPayloadError("ses: missing 'timestamp'")


def _ses_key(what: str, section: dict, message_id: str, recipient: str, at: float) -> str:
    """SES's `feedbackId` names one bounce or complaint report; deliveries have only time."""
    feedback_id = section.get("feedbackId")
    if isinstance(feedback_id, str) and feedback_id:
        return dedupe_key("ses", what, feedback_id, recipient)
    return dedupe_key("ses", what, message_id, recipient, at)


# --- SendGrid ------------------------------------------------------------------------------

def parse_sendgrid(body: bytes) -> list[FeedbackEvent]:
    """SendGrid Event Webhook: an array of `event`, `email`, `timestamp`, `sg_event_id`..."""
    data = fields.load(body, "sendgrid")
    if not isinstance(data, list):
        raise WebhookPayloadError("sendgrid: expected a JSON array of events")
    return _each("sendgrid", data, _sendgrid_event)


def _sendgrid_event(obj: dict, where: str) -> FeedbackEvent | None:
    event = fields.required_str(obj, "event", where)
    kind = SENDGRID_KINDS.get(event)
    if kind is None:
        return None
    reason = fields.text(obj.get("reason")) or fields.text(obj.get("response"))
    if event == "bounce":
        kind = SENDGRID_BOUNCE_TYPES.get(fields.text(obj.get("type")) or "bounce", K.BOUNCED_HARD)
    elif event == "dropped" and SENDGRID_DROPPED_HARD.match(reason):
        kind = K.BOUNCED_HARD
    recipient, at = fields.recipient(obj, "email", where), fields.number(obj, "timestamp", where)
    message_id = fields.optional_str(obj, "sg_message_id")
    event_id = fields.optional_str(obj, "sg_event_id")
    key = (dedupe_key("sendgrid", event_id) if event_id
           else dedupe_key("sendgrid", message_id, event, recipient, at))
    status = fields.status(fields.text(obj.get("status")), reason)
    return FeedbackEvent(kind, recipient, "sendgrid", at, message_id, reason, status, key,
                         fields.sender_domain(obj))


# --- Postmark ------------------------------------------------------------------------------

def parse_postmark(body: bytes) -> list[FeedbackEvent]:
    """Postmark webhooks: Bounce, SpamComplaint, Delivery and SubscriptionChange records."""
    return _each("postmark", fields.load(body, "postmark"), _postmark_event, allow_array=False)


def _postmark_event(obj: dict, where: str) -> FeedbackEvent | None:
    record = fields.required_str(obj, "RecordType", where)
    if record in ("Bounce", "SpamComplaint"):
        kind = (K.COMPLAINED if record == "SpamComplaint"
                else POSTMARK_BOUNCE_KINDS.get(fields.required_str(obj, "Type", where)))
        names = ("Email", "BouncedAt")
        reason = fields.text(obj.get("Details")) or fields.text(obj.get("Description"))
    elif record == "Delivery":
        kind, names = K.DELIVERED, ("Recipient", "DeliveredAt")
        reason = fields.text(obj.get("Details"))
    elif record == "SubscriptionChange":
        kind, names, reason = _postmark_unsubscribe(obj), ("Recipient", "ChangedAt"), ""
    else:
        return None   # Open, Click, Inbound...
    if kind is None:
        return None
    recipient, at = fields.recipient(obj, names[0], where), fields.iso_time(obj, names[1], where)
    message_id = fields.optional_str(obj, "MessageID")
    record_id = obj.get("ID")
    key = (dedupe_key("postmark", record, record_id) if isinstance(record_id, int)
           else dedupe_key("postmark", record, message_id, recipient, at))
    return FeedbackEvent(kind, recipient, "postmark", at, message_id, reason,
                         fields.status(None, reason), key,
                         fields.sender_domain(obj.get("From"), obj.get("Metadata")))


def _postmark_unsubscribe(obj: dict) -> FeedbackKind | None:
    """Only the recipient's own opt-out; suppressions for bounces came as their Bounce."""
    if (obj.get("SuppressSending") is True and obj.get("Origin") == "Recipient"
            and obj.get("SuppressionReason") == "ManualSuppression"):
        return K.UNSUBSCRIBED
    return None


def _each(provider: str, data: Any, one: Callable[[dict, str], FeedbackEvent | None],
          allow_array: bool = True) -> list[FeedbackEvent]:
    return fields.parse_each(fields.objects(data, provider, allow_array), provider, one)


PARSERS: dict[str, Callable[[bytes], list[FeedbackEvent]]] = {
    "brevo": parse_brevo, "mailjet": parse_mailjet, "ses": parse_ses,
    "sendgrid": parse_sendgrid, "postmark": parse_postmark,
}


# --- SendGrid's signed Event Webhook --------------------------------------------------------

def verify_sendgrid_signature(public_key_pem: bytes, signature_b64: str, timestamp: str,
                              body: bytes) -> bool:
    """True if `signature_b64` (header X-Twilio-Email-Event-Webhook-Signature) is SendGrid's
    ECDSA P-256 / SHA-256 signature of `timestamp` (X-Twilio-Email-Event-Webhook-Timestamp)
    followed by the raw body. A garbled signature is False; a key that is not a P-256 public
    key raises ValueError (check it at load with `sendgrid_public_key`).
    """
    key = sendgrid_public_key(public_key_pem)
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sendgrid_public_key(data: bytes | str) -> ec.EllipticCurvePublicKey:
    """The verification key as PEM, or as the bare base64 DER that SendGrid's settings show."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if b"-----BEGIN" in raw:
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_der_public_key(base64.b64decode(b"".join(raw.split())))
    except (ValueError, TypeError, binascii.Error) as e:
        raise ValueError(f"not a public key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key

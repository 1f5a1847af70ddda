"""Reading provider webhook JSON: required fields, addresses, times, RFC 3463 codes, senders.

The readers raise `WebhookPayloadError` naming where the body is wrong ("sendgrid event 2:
missing 'email'"), so `relay.feedback.webhooks` can stay a list of mappings.
"""
from __future__ import annotations

import datetime
import email.utils
import json
import math
import re
from typing import Any, Callable, TypeVar

_ENHANCED_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")   # RFC 3463 §2
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_-]{1,63}\.)+[a-z0-9-]{2,63}$")
SENDER_KEYS = ("sender_domain", "sender", "from", "source", "sender_email")   # in custom fields

T = TypeVar("T")


class WebhookPayloadError(ValueError):
    """The body is not this provider's webhook; the message says what is wrong with it."""


def load(body: bytes | str, provider: str, what: str = "body") -> Any:
    """The JSON value of `body` (or of a field holding JSON, named by `what`).

    Refused besides what does not parse: nesting deeper than the parser's recursion (a
    body of 100 000 `[`), and strings holding a lone UTF-16 surrogate (`"\\ud800"`, which
    RFC 8259 §8.2 leaves unpredictable): no address or id of ours can hold one, and the
    spool's SQLite could not store it."""
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode("utf-8")      # lone surrogates raise
    except RecursionError:
        raise WebhookPayloadError(f"{provider}: {what} is JSON nested too deep") from None
    except UnicodeEncodeError:
        raise WebhookPayloadError(f"{provider}: {what} holds a lone UTF-16 surrogate") from None
    except ValueError as e:      # JSONDecodeError, and UnicodeDecodeError, are ValueErrors
        raise WebhookPayloadError(f"{provider}: {what} is not JSON ({e})") from None
    return data


def objects(data: Any, provider: str, allow_array: bool = True) -> list[dict]:
    items = data if allow_array and isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            shape = "a JSON object or an array of objects" if allow_array else "a JSON object"
            raise WebhookPayloadError(f"{provider}: item {i} is not an object; expected {shape}")
    return items


def parse_each(items: list[dict], provider: str, one: Callable[[dict, str], T | None]) -> list[T]:
    """All or nothing: the first bad item raises before anything is returned."""
    events = (one(item, f"{provider} event {i}") for i, item in enumerate(items))
    return [event for event in events if event is not None]


def required_str(obj: dict, field: str, where: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value:
        raise WebhookPayloadError(f"{where}: missing {field!r}" if value is None
                                  else f"{where}: {field!r} is not a non-empty string")
    return value


def required_object(obj: dict, field: str, where: str) -> dict:
    return as_object(obj.get(field), f"{where} {field!r}")


def as_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{where}: missing or not an object")
    return value


def nonempty_list(obj: dict, field: str, where: str) -> list:
    value = obj.get(field)
    if not isinstance(value, list) or not value:
        raise WebhookPayloadError(f"{where}: {field!r} is missing or not a non-empty list")
    return value


def recipient(obj: dict, field: str, where: str) -> str:
    if field not in obj:
        raise WebhookPayloadError(f"{where}: missing {field!r}")
    return address(obj[field], f"{where} {field!r}")


def address(value: Any, where: str) -> str:
    """`local@domain` as given (stripped); suppressions compare it lower-cased. No space and
    nothing unprintable (NUL, a control or format character) in it."""
    found = value.strip() if isinstance(value, str) else ""
    local, at, domain = found.rpartition("@")
    if not (local and at and domain) or not found.isprintable() or any(c.isspace() for c in found):
        raise WebhookPayloadError(f"{where}: not an email address")
    return found


def number(obj: dict, field: str, where: str) -> float:
    value = obj.get(field)
    try:
        seconds = (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
                   else math.nan)
    except OverflowError:                 # an integer of 400 digits is no float
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:   # json.loads accepts NaN and Infinity
        raise WebhookPayloadError(f"{where}: missing {field!r}" if value is None
                                  else f"{where}: {field!r} is not a Unix time")
    return seconds


def iso_time(obj: dict, field: str, where: str) -> float:
    """An ISO 8601 time (SES `2016-01-27T14:59:38.237Z`, Postmark's 7-digit fractions)."""
    value = required_str(obj, field, where)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise WebhookPayloadError(f"{where}: {field!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def optional_str(obj: dict, field: str) -> str | None:
    value = obj.get(field)
    return value if isinstance(value, str) and value else None


def text(value: Any) -> str:
    """Free text for `reason`; numbers (Mailjet's MessageID) become their digits."""
    if isinstance(value, bool) or value is None:
        return ""
    return str(value).strip() if isinstance(value, (str, int, float)) else ""


def status(explicit: str | None, *texts: str) -> str | None:
    """The RFC 3463 enhanced code: the provider's own field, else the first one in its text."""
    for candidate in (explicit or "", *texts):
        match = _ENHANCED_STATUS.search(candidate)
        if match:
            return match.group(1)
    return None


# --- who sent it ---------------------------------------------------------------------------

def sender_domain(*candidates: Any) -> str | None:
    """The first sender domain found in an address, a JSON object string or a dict."""
    for value in candidates:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):     # a custom field is free text
                continue
        domain = _domain_in(value)
        if domain:
            return domain
    return None


def _domain_in(value: Any) -> str | None:
    if isinstance(value, str):
        return _address_domain(value)
    if not isinstance(value, dict):
        return None
    fields = {str(k).lower(): v for k, v in value.items()}
    for key in SENDER_KEYS:
        field = fields.get(key)
        if not isinstance(field, str):
            continue
        domain = _domain_name(field) if key == "sender_domain" else _address_domain(field)
        if domain:
            return domain
    return None


def _address_domain(value: str) -> str | None:
    """`acme.fr` from `news@acme.fr` or `"Acme" <news@acme.fr>`; None if it is no address."""
    _, address = email.utils.parseaddr(value)
    local, at, domain = address.rpartition("@")
    return _domain_name(domain) if local and at else None


def _domain_name(value: str) -> str | None:
    domain = value.strip().lower().rstrip(".")
    return domain if _DOMAIN.match(domain) else None

"""Provider webhooks on the public HTTP listener: `POST /webhooks/<provider>`.

Each configured provider (`feedback.webhooks.<provider>.token_env`) is served; others are
404. A request must carry the token as `Authorization: Bearer <token>` or as the password
of HTTP basic auth (what Brevo and Mailjet let you put in the URL) -> 401 otherwise. SendGrid's
ECDSA signature is checked too when `public_key_file` is configured. The body is parsed by
`feedback/webhooks.py`: malformed -> 400 and nothing changes; otherwise the events are
stored (duplicates ignored) before the 200, so an answered event is durable.
"""
from __future__ import annotations

import base64
import hmac
import logging
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from relay.config import Webhook
from relay.feedback.events import FeedbackEvent
from relay.feedback.webhooks import PARSERS, WebhookPayloadError, ses_subscription_url, verify_sendgrid_signature

log = logging.getLogger("relay.webhooks")

MAX_BODY = 4 * 1024 * 1024
Record = Callable[[list[FeedbackEvent]], Awaitable[int]]


def add_routes(app: web.Application, webhooks: dict[str, Webhook], record: Record) -> None:
    for provider, settings in webhooks.items():
        app.router.add_post(f"/webhooks/{provider}", _handler(provider, settings, record))


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":      # aiohttp decodes headers with surrogateescape
        return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode())
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    return False


def _handler(provider: str, settings: Webhook, record: Record):
    parse = PARSERS[provider]
    public_key = Path(settings.public_key_file).read_bytes() if settings.public_key_file else None

    async def handle(request: web.Request) -> web.Response:
        if not _authorized(request, settings.token()):
            return web.Response(status=401, text="unauthorized\n",
                                headers={"WWW-Authenticate": 'Basic realm="relay webhooks"'})
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return web.Response(status=413, text="body too large\n")
        if public_key is not None and not verify_sendgrid_signature(
                public_key, request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
                request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""), body):
            return web.Response(status=401, text="bad signature\n")
        if provider == "ses":
            url = ses_subscription_url(body)
            if url:
                log.warning("SES SubscriptionConfirmation: confirm it by visiting %s", url)
                return web.Response(text="subscription noted\n")
        try:
            events = parse(body)
        except WebhookPayloadError as exc:
            return web.Response(status=400, text=f"malformed {provider} payload: {exc}\n")
        new = await record(events)
        return web.json_response({"events": len(events), "new": new})
    return handle

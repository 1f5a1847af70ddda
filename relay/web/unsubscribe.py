"""The unsubscribe endpoint behind the links relay injects into bulk mail (RFC 8058).

    POST /unsubscribe/{token}   one click: unsubscribe at once, answer a short page
    GET  /unsubscribe/{token}   a page with a confirm button that POSTs; never unsubscribes
    anything else               404 (bad token) or 405, with the same short pages

RFC 8058: the mailbox provider POSTs `List-Unsubscribe=One-Click` to the URI and expects the
unsubscribe to happen with no further step. Its body is not needed (the token names the
recipient) and not read, so a browser form post, an empty body or multipart/form-data work
the same. GET must not unsubscribe because link scanners and prefetchers follow GETs.

No page shows the address, only the sender domain; every value put into HTML is escaped.
Responses are not cached, send no Referer (the URL is a capability), and are not framed.
The access log stays off in `start_http` for the same reason: the path holds the token.
"""
from __future__ import annotations

import html
import logging
from typing import Awaitable, Callable

from aiohttp import web

from relay.web.tokens import UnsubscribeTokens

log = logging.getLogger("relay.web")

Unsubscribe = Callable[[str, str], Awaitable[None]]   # (recipient, sender domain)

PATH = "/unsubscribe/{token}"
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"   # the RFC 8058 POST body
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
_TOKENS = web.AppKey("tokens", UnsubscribeTokens)
_UNSUBSCRIBE = web.AppKey("unsubscribe", Unsubscribe)


def make_app(tokens: UnsubscribeTokens, unsubscribe: Unsubscribe) -> web.Application:
    """The application serving /unsubscribe/{token}; `unsubscribe` records one opt-out."""
    app = web.Application(client_max_size=MAX_BODY)
    app[_TOKENS] = tokens
    app[_UNSUBSCRIBE] = unsubscribe
    app.router.add_get(PATH, confirm_page)
    app.router.add_post(PATH, one_click)
    app.on_response_prepare.append(_add_security_headers)
    return app


async def confirm_page(request: web.Request) -> web.Response:
    """GET: ask for a click. A form POSTing the RFC 8058 body back to this very URL."""
    pair = request.app[_TOKENS].read(request.match_info["token"])
    if pair is None:
        return _not_found()
    _, domain = pair
    return _page(200, "Unsubscribe", f"""
<p>Stop receiving bulk mail from <strong>{html.escape(domain)}</strong> at this address?</p>
<form method="post">
<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">
<button type="submit">Unsubscribe</button>
</form>""")


async def one_click(request: web.Request) -> web.Response:
    """POST: unsubscribe now (RFC 8058 one-click); the body is not needed, so it is not read."""
    pair = request.app[_TOKENS].read(request.match_info["token"])
    if pair is None:
        return _not_found()
    recipient, domain = pair
    try:
        await request.app[_UNSUBSCRIBE](recipient, domain)
    except Exception:   # our failure: say "try again" (the sender may retry), never the details
        log.exception("unsubscribe failed for a recipient of %s", domain)
        return _page(503, "Please try again",
                     "<p>Your request could not be recorded just now. Please try again later.</p>",
                     headers={"Retry-After": "60"})
    return _page(200, "You are unsubscribed",
                 f"<p>You will no longer receive bulk mail from "
                 f"<strong>{html.escape(domain)}</strong> at this address.</p>")


async def start_http(app: web.Application, address: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on address:port (0 picks a free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, address, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


async def stop_http(runner: web.AppRunner) -> None:
    """Stop listening, finish in-flight requests and release the socket."""
    await runner.cleanup()


def _not_found() -> web.Response:
    """A forged, altered or truncated token: the same answer whatever was wrong with it."""
    return _page(404, "Link not valid",
                 "<p>This unsubscribe link is not valid. Please use the link from the message.</p>")


def _page(status: int, title: str, body: str, headers: dict[str, str] | None = None) -> web.Response:
    title = html.escape(title)
    text = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex, nofollow"><title>{title}</title></head>\n'
            f'<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">'
            f'<h1>{title}</h1>{body}\n</body></html>\n')
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8",
                        headers=headers)


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response of this app, router 404/405 included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)

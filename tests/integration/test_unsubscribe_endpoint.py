"""The one-click unsubscribe endpoint (RFC 8058) over a real socket.

A mailbox provider POSTs `List-Unsubscribe=One-Click` to the link relay put in the message:
the recipient is unsubscribed from that sender domain at once. A GET (a person clicking, or a
link scanner) only shows a confirm button. A forged link is a 404. No page and no header ever
shows the address.
"""
from __future__ import annotations

import asyncio
import http.client
import threading
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from relay.web.tokens import UnsubscribeTokens
from relay.web.unsubscribe import make_app, start_http, stop_http

SECRET = b"integration-test-unsubscribe-secret"
RECIPIENT, DOMAIN = "jeanne.dupont@example.net", "acme.fr"
ONE_CLICK = b"List-Unsubscribe=One-Click"
SECURITY_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff"}


@dataclass
class Endpoint:
    port: int
    tokens: UnsubscribeTokens
    unsubscribed: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


@pytest.fixture
def endpoint():
    """The unsubscribe app on 127.0.0.1:0 in its own thread and event loop, recording calls."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="http-endpoint", daemon=True)
    thread.start()
    tokens = UnsubscribeTokens(SECRET)
    state = Endpoint(port=0, tokens=tokens)

    async def unsubscribe(recipient: str, domain: str) -> None:
        if state.fail:
            raise OSError("disk full: jeanne.dupont@example.net")   # must not reach the client
        state.unsubscribed.append((recipient, domain))

    runner, state.port = asyncio.run_coroutine_threadsafe(
        start_http(make_app(tokens, unsubscribe), "127.0.0.1", 0), loop).result(timeout=10)
    yield state
    asyncio.run_coroutine_threadsafe(stop_http(runner), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/x-www-form-urlencoded") -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read().decode())
    finally:
        conn.close()


def assert_private(reply: Reply) -> None:
    """The address appears nowhere, and the response carries the security headers."""
    shown = (reply.body + "".join(f"{k}: {v}" for k, v in reply.headers.items())).lower()
    for part in (RECIPIENT, "jeanne", "dupont", "example.net", urllib.parse.quote(RECIPIENT)):
        assert part not in shown
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, name


class FormParser(HTMLParser):
    """The forms of a page: (method, action, {input name: value})."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str | None, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append((attrs.get("method", "get").lower(), attrs.get("action"), {}))
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1][2][attrs["name"]] = attrs.get("value", "")


def test_one_click_post_unsubscribes_at_once(endpoint):
    """The RFC 8058 POST unsubscribes (recipient, sender domain) before the 200 comes back."""
    path = f"/unsubscribe/{endpoint.tokens.make(RECIPIENT, DOMAIN)}"
    reply = request(endpoint.port, "POST", path, ONE_CLICK)
    assert reply.status == 200
    assert "You are unsubscribed" in reply.body
    assert reply.headers["Content-Type"].startswith("text/html")
    assert endpoint.unsubscribed == [(RECIPIENT, DOMAIN)]
    assert_private(reply)


@pytest.mark.parametrize("body, content_type", [
    (b"", "application/x-www-form-urlencoded"),
    (None, "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
    (b"anything=else", "text/plain"),
])
def test_any_post_body_unsubscribes(endpoint, body, content_type):
    """Browsers and providers post various bodies; the token alone names who leaves."""
    path = f"/unsubscribe/{endpoint.tokens.make(RECIPIENT, DOMAIN)}"
    assert request(endpoint.port, "POST", path, body, content_type).status == 200
    assert endpoint.unsubscribed == [(RECIPIENT, DOMAIN)]


def test_get_shows_a_confirm_form_that_unsubscribes_only_when_posted(endpoint):
    """GET never unsubscribes (link scanners follow GETs); its form posts the one-click body
    back to the same URL, and submitting it unsubscribes."""
    path = f"/unsubscribe/{endpoint.tokens.make(RECIPIENT, DOMAIN)}"
    page = request(endpoint.port, "GET", path)
    assert page.status == 200
    assert DOMAIN in page.body
    assert endpoint.unsubscribed == []
    assert_private(page)
    assert request(endpoint.port, "HEAD", path).status == 200
    assert endpoint.unsubscribed == []

    parser = FormParser()
    parser.feed(page.body)
    [(method, action, fields)] = parser.forms
    assert method == "post"
    assert fields == {"List-Unsubscribe": "One-Click"}
    target = urllib.parse.urljoin(path, action or "")
    assert target == path
    reply = request(endpoint.port, "POST", target, urllib.parse.urlencode(fields).encode())
    assert reply.status == 200
    assert endpoint.unsubscribed == [(RECIPIENT, DOMAIN)]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_or_altered_token_is_not_found(endpoint, method):
    """404 with a short page for a token relay did not make, however close to a real one."""
    real = endpoint.tokens.make(RECIPIENT, DOMAIN)
    forged = UnsubscribeTokens(b"an attacker's guessed secret!!").make(RECIPIENT, DOMAIN)
    altered = real[:10] + ("A" if real[10] != "A" else "B") + real[11:]
    for token in (forged, altered, real[:-4], "garbage", "<script>alert(1)</script>"):
        reply = request(endpoint.port, method, f"/unsubscribe/{urllib.parse.quote(token)}", ONE_CLICK)
        assert reply.status == 404, token
        assert "<script>" not in reply.body
        assert_private(reply)
    assert endpoint.unsubscribed == []


def test_a_failure_to_record_asks_to_retry_without_details(endpoint):
    """If the unsubscribe cannot be stored, the answer is a retryable 503 with no error text."""
    endpoint.fail = True
    reply = request(endpoint.port, "POST", f"/unsubscribe/{endpoint.tokens.make(RECIPIENT, DOMAIN)}",
                    ONE_CLICK)
    assert reply.status == 503
    assert "disk full" not in reply.body and "OSError" not in reply.body
    assert "unsubscribed" not in reply.body.lower()
    assert_private(reply)


def test_other_paths_and_methods_are_refused_with_the_security_headers(endpoint):
    path = f"/unsubscribe/{endpoint.tokens.make(RECIPIENT, DOMAIN)}"
    for method, target, status in (("PUT", path, 405), ("DELETE", path, 405),
                                   ("GET", "/unsubscribe/", 404), ("GET", "/", 404)):
        reply = request(endpoint.port, method, target, b"" if method in ("PUT", "DELETE") else None)
        assert reply.status == status, (method, target)
        assert_private(reply)
    assert endpoint.unsubscribed == []

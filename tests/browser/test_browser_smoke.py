"""The browser plumbing works end to end: headless Chromium loads a page from a server on
loopback, fills in its form, submits it, and the server receives the POST; the screenshot
of the result is a PNG kept on disk."""
from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import wait_for

FORM = b"""<!doctype html><html><head><title>Sender</title></head><body>
<form method="post" action="/senders"><label>Address <input name="address"></label>
<button type="submit">Add</button></form></body></html>"""


class FormServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1, port 0, that serves FORM at / and records the bodies
    of the POSTs it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.posts: list[dict[str, list[str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: FormServer

    def do_GET(self) -> None:
        self._reply(FORM)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.posts.append(urllib.parse.parse_qs(body))
        self._reply(b"<!doctype html><title>Added</title><p id=done>Added.</p>")

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:      # keep the test output quiet
        pass


@pytest.fixture
def form_server() -> Iterator[FormServer]:
    server = FormServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_browser_submits_a_form_and_keeps_a_screenshot(browser, shot, form_server):
    """The browser fills in and submits a form; the server sees the POST with the typed
    value, and the screenshot of each page is a non-empty PNG file."""
    browser.get(form_server.url)
    field = wait_for(browser, lambda b: b.find_element(By.NAME, "address"), what="the form")
    before = shot("form")
    field.send_keys("billing@acme.fr")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait_for(browser, lambda b: b.find_elements(By.ID, "done"), what="the page after the POST")
    assert form_server.posts == [{"address": ["billing@acme.fr"]}]
    after = shot("added")

    assert before.name == "test_browser_submits_a_form_and_keeps_a_screenshot-1-form.png"
    for png in (before, after):
        assert png.stat().st_size > 0
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

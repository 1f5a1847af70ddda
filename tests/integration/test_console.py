"""The web console over real sockets (HTTP on the metrics listener), without a browser.

Only `console.users` get in, with their `users:` password; the session cookie is HttpOnly
and SameSite=Strict; every answer carries the Content-Security-Policy and framing headers;
a page without a session sends to the login; failed logins are throttled like SMTP AUTH
(401, then 429 once locked out). Every POST without the session's CSRF token is refused
(403) and changes nothing. Pausing, resuming and suppressing through the console are the
CLI's operations, logged as events naming the operator. The queue pages by state, domain
and (POSTed) recipient; no link in any page carries an address.
"""
from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from relay.events import RECENT
from relay.model import QueuedMessage, Recipient, new_queue_id
from tests.conftest import PASSWORD, wait_until


class Client:
    """A browser's worth of HTTP: cookies kept, redirects followed, errors returned."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/console"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.last = ""

    def request(self, path: str, form: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            response = self.opener.open(self.base + path, data, timeout=30)
        except urllib.error.HTTPError as error:
            response = error
        self.last = response.read().decode()
        return response

    def csrf(self) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.last).group(1)

    def login(self, user: str = "billing-app", password: str = PASSWORD):
        self.request("/login")
        return self.request("/login", {"csrf": self.csrf(), "username": user, "password": password})

    def post(self, path: str, form: dict, csrf: bool = True):
        return self.request(path, {**form, **({"csrf": self.csrf()} if csrf else {})})


@pytest.fixture
def relay(make_relay):
    return make_relay(**{"metrics": {"address": "127.0.0.1", "port": 0},
                         "console": {"enabled": True, "users": ["billing-app"]},
                         "blocklists": {"ip_zones": [], "domain_zones": []}})


@pytest.fixture
def client(relay) -> Client:
    return Client(relay.relay.metrics_port)


def test_disabled_console_is_not_served(make_relay):
    relay = make_relay(**{"metrics": {"address": "127.0.0.1", "port": 0}})
    assert Client(relay.relay.metrics_port).request("/login").status == 404


def test_pages_need_a_session_and_carry_the_security_headers(client):
    response = client.request("/domains")
    assert response.url.endswith("/console/login") and 'id="login"' in client.last
    headers = response.headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"


def test_login_sets_a_strict_httponly_session_cookie(client):
    response = client.login()
    assert response.status == 200 and response.url.endswith("/console/domains")
    assert 'id="domains"' in client.last and 'data-domain="acme.fr"' in client.last
    cookie = next(c for c in client.jar if c.name == "relay_console")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Strict" and cookie.path == "/console/"


def test_a_user_outside_console_users_cannot_log_in(client):
    """erp has no password; a made-up name neither: the same 401 answer as a wrong password."""
    assert client.login("erp", PASSWORD).status == 401
    assert client.login("billing-app", "wrong").status == 401
    assert "Wrong username or password" in client.last


def test_failed_logins_are_throttled_then_locked_out(relay, client):
    relay.relay.acceptance.throttle.policy = relay.relay.acceptance.throttle.policy.model_copy(
        update={"slow_after": 100, "lock_after": 3})
    for _ in range(3):
        assert client.login("billing-app", "wrong").status == 401
    assert client.login().status == 429 and "Too many failed logins" in client.last


def test_the_login_form_without_its_token_is_refused(client):
    client.request("/login")
    response = client.request("/login", {"username": "billing-app", "password": PASSWORD})
    assert response.status == 403 and "CSRF token" in client.last


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(relay, client):
    client.login()
    response = client.post("/domains/acme.fr/pause", {}, csrf=False)
    assert response.status == 403 and "Refused" in client.last
    assert relay.call(relay.relay.state.paused()) == {}
    response = client.request("/domains/acme.fr/pause", {"csrf": "forged"})
    assert response.status == 403 and relay.call(relay.relay.state.paused()) == {}


def test_pause_and_resume_are_the_operators_operations(relay, client):
    client.login()
    client.post("/domains/acme.fr/pause", {})
    assert relay.call(relay.relay.state.paused())["acme.fr"][0] == "all"
    assert "acme.fr paused" in client.last and 'class="state paused"' in client.last
    client.post("/domains/acme.fr/resume", {})
    assert relay.call(relay.relay.state.paused()) == {}
    by = [(kind, fields.get("by")) for _, kind, fields in RECENT.latest(10, domain="acme.fr")]
    assert ("paused", "console:billing-app") in by and ("resumed", "console:billing-app") in by
    client.request("/events?kind=paused&domain=acme.fr")
    assert "console:billing-app" in client.last


def test_suppressions_search_add_remove_and_export(relay, client):
    client.login()
    client.request("/suppressions")
    client.post("/suppressions/add", {"recipient": "Bob@Example.net", "domain": "acme.fr"})
    assert "1 address suppressed for acme.fr" in client.last
    assert relay.call(relay.relay.state.suppression("bob@example.net", "acme.fr")) is not None
    client.post("/suppressions", {"q": "bob@"})
    assert "bob@example.net" in client.last and "1 match" in client.last
    assert "@" not in "".join(re.findall(r'(?:href|action)="([^"]*)"', client.last))
    client.post("/suppressions/remove", {"recipient": "bob@example.net", "domain": "acme.fr"})
    assert relay.call(relay.relay.state.suppression("bob@example.net", "acme.fr")) is None
    client.post("/suppressions/add", {"recipient": "eve@example.net", "domain": "acme.fr"})
    assert client.request("/suppressions.csv").headers["Content-Type"].startswith("text/csv")
    assert client.last.splitlines()[0] == "recipient,domain,reason,since"
    assert client.last.splitlines()[1].startswith("eve@example.net,acme.fr,manual,")


def test_the_queue_pages_by_state_domain_and_recipient(relay, client):
    now = relay.relay.clock.now()
    held = [QueuedMessage(new_queue_id(), "billing@acme.fr",
                          [Recipient(f"r{i}@example.net")], "acme.fr", "provider",
                          b"Subject: x\r\n\r\nx\r\n", now + i, next_attempt=now + 86400)
            for i in range(120)]
    relay.call(relay.relay.state.pause("acme.fr", "test"))     # nothing leaves meanwhile
    relay.call(relay.relay.spool.enqueue(*held))
    client.login()
    client.request("/queue?state=deferred&domain=acme.fr")
    first = re.findall(r'<tr data-id="([^"]+)"', client.last)
    assert first == [m.id for m in held[:50]]
    after = re.search(r'id="next" href="([^"]+)"', client.last).group(1).replace("&amp;", "&")
    client.request(after.removeprefix("/console"))
    assert re.findall(r'<tr data-id="([^"]+)"', client.last) == [m.id for m in held[50:100]]
    client.request("/queue?state=ready")
    assert "No queued message matches" in client.last
    client.post("/queue", {"recipient": "r7@example.net", "state": "", "domain": ""})
    assert re.findall(r'<tr data-id="([^"]+)"', client.last) == [held[7].id]
    client.request(f"/queue/{held[7].id}")
    assert "r7@example.net" in client.last
    client.post(f"/queue/{held[7].id}/delete", {})
    assert relay.relay.spool.get(held[7].id) is None
    assert "deleted" in client.last


def test_a_user_dropped_from_console_users_is_logged_out_at_once(relay, client):
    client.login()
    config = relay.relay.config
    relay.relay.config = config.model_copy(update={"console": config.console.model_copy(
        update={"users": ["someone-else"]})})
    assert client.request("/domains").url.endswith("/console/login")


def test_the_domains_page_checks_dns_in_the_background(relay, client):
    """The first look at the domains page starts a doctor run per domain; once it ends the
    page shows its verdict, and the domain's page its checks and records to publish."""
    client.login()
    assert "not checked" in client.last
    wait_until(lambda: 'class="bad">to fix' in (client.request("/domains") and client.last),
               what="the doctor's verdict on the domains page")
    client.request("/domains/acme.fr")
    assert 'id="doctor"' in client.last and "Records to publish" in client.last
    assert 'class="copy" data-copy="record-1"' in client.last


def test_what_was_done_shows_once_and_never_rides_in_the_url(client):
    """The flash message lives in the session: a crafted ?done= shows nothing, and the
    message of an action shows on the next page only."""
    client.login()
    client.request("/domains?done=Your+password+expired")
    assert "Your password expired" not in client.last
    response = client.post("/domains/acme.fr/pause", {})
    assert "?" not in response.url and "acme.fr paused" in client.last
    client.request("/domains")
    assert "acme.fr paused:" not in client.last


def test_the_events_page_shows_the_delivery_process_events_too(relay, client, upstream):
    """`delivered` is logged by the delivery process; it reaches the listener's recent events
    with the next metrics report, and the events page lists it."""
    from tests.conftest import message, submit
    assert submit(relay.port("local"), "billing@acme.fr", ["reader@example.net"], message()) == {}
    upstream.wait_for(lambda msgs: len(msgs) == 1, what="the message delivered")
    client.login()
    wait_until(lambda: client.request("/events?kind=delivered") and '<tr class="delivered">' in client.last,
               what="the delivery process's delivered event on the events page")
    client.request("/events?kind=queued")
    assert '<tr class="queued">' in client.last

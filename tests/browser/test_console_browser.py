"""The web console end to end, in headless Chromium against a real relay: an operator logs in
(a wrong password is refused with 401), pauses and resumes acme.fr from the domains page and
finds both in the events page under their name, reads a domain's DNS checks and copies a
record to publish, pages through a queue of 10,000 messages and filters it, finds and
removes a suppression, and a form sent without its CSRF token is refused (403) and changes
nothing. No URL the browser visits or any page links to carries an address. Every page
visited is kept as a screenshot (`shot`); `RELAY_README_SCREENSHOT`, when set, also gets
the domains page, the README's picture.

The backlog is other.fr's, paused (as relay itself holds a paused domain's mail) and every
message due a day from now: nothing in it is due during a test, and resuming acme.fr (the
domain the tests pause) releases none of it, so the queue pages read the same from the
first click to the last.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from relay.model import QueuedMessage, Recipient, Stream, new_queue_id
from relay.operations import OPERATOR_PAUSE
from relay.state.suppressions import SuppressionReason
from tests.browser.conftest import wait_for
from tests.conftest import PASSWORD

USER = "billing-app"
BACKLOG = 10_000
HELD_EVERY = 100               # one message in a hundred is held by other.fr's pause
PAGE = 50                      # relay/console/pages.py's PAGE
DAY = 86400
WANTED = "jeanne.martin@example.net"     # the suppression the operator looks for


@pytest.fixture
def relay(make_relay):
    """A relay with the console on, its blocklist watch asking no zone."""
    return make_relay(**{"metrics": {"address": "127.0.0.1", "port": 0},
                         "console": {"enabled": True, "users": [USER]},
                         "blocklists": {"ip_zones": [], "domain_zones": []}})


@dataclass
class Backlog:
    ids: list[str]             # in arrival order
    held: list[str]            # the ones other.fr's pause holds, in arrival order


@pytest.fixture
def backlog(relay) -> Backlog:
    """10,000 of other.fr's messages straight into the spool, one millisecond apart (ids and
    arrival order agree), each due a day from now; every hundredth held by the pause."""
    async def seed() -> Backlog:
        await relay.relay.state.pause("other.fr", OPERATOR_PAUSE)
        now = relay.relay.clock.now()
        first = int(now * 1000) - BACKLOG - 60_000
        # the half millisecond keeps int(t * 1000) from rounding down onto the previous one
        messages = [_queued(i, (first + i + 0.5) / 1000, now + DAY) for i in range(BACKLOG)]
        await relay.relay.spool.enqueue(*messages)
        held = messages[::HELD_EVERY]
        for message in held:
            await relay.relay.spool.record_hold(message, "paused")
        return Backlog([m.id for m in messages], [m.id for m in held])
    return relay.call(seed())


def _queued(n: int, created: float, due: float) -> QueuedMessage:
    body = (f"From: news@other.fr\r\nTo: reader{n}@example.net\r\nSubject: News {n}\r\n\r\n"
            f"Issue {n}.\r\n").encode()
    return QueuedMessage(id=new_queue_id(created), mail_from="news@other.fr",
                         recipients=[Recipient(f"reader{n}@example.net")], domain="other.fr",
                         route="provider", body=body, created=created, attempts=1,
                         next_attempt=due, stream=Stream.BULK)


@pytest.fixture
def suppressed(relay) -> None:
    """240 suppressions over both domains, and WANTED for each of them."""
    reasons = list(SuppressionReason)

    async def seed() -> None:
        state = relay.relay.state
        for n in range(240):
            await state.suppress(f"former{n}@example.org", ("acme.fr", "other.fr")[n % 2],
                                 reasons[n % len(reasons)])
        await state.suppress(WANTED, "acme.fr", SuppressionReason.HARD_BOUNCE)
        await state.suppress(WANTED, "other.fr", SuppressionReason.UNSUBSCRIBED)
    relay.call(seed())


class Tab:
    """The browser on the console: each step waits for the page it leads to, and checks that
    neither its URL nor any of its links carries an address."""

    def __init__(self, browser: WebDriver, port: int) -> None:
        self.browser = browser
        self.base = f"http://127.0.0.1:{port}/console"

    def open(self, path: str) -> None:
        self._arrive(lambda: self.browser.get(self.base + path), path)

    def click(self, css: str, within: WebElement | None = None, confirm: str = "") -> None:
        """Click and wait for the next page; `confirm`: the question console.js asks first
        (accepted)."""
        element = (within or self.browser).find_element(By.CSS_SELECTOR, css)

        def act() -> None:
            element.click()
            if confirm:
                alert = wait_for(self.browser, EC.alert_is_present(), what="the confirmation")
                assert confirm in alert.text
                alert.accept()
        self._arrive(act, css)

    def _arrive(self, act: Callable[[], None], what: str) -> None:
        old = self.browser.find_element(By.TAG_NAME, "html")
        act()
        wait_for(self.browser, EC.staleness_of(old), what=f"the page after {what}")
        wait_for(self.browser, lambda b: b.execute_script(
            "return document.readyState") == "complete", what=f"{what} to load")
        self.check_no_address()

    def check_no_address(self) -> None:
        assert "@" not in self.browser.current_url
        links = self.browser.execute_script(
            "return [...document.querySelectorAll('a[href]')].map(a => a.href)")
        assert links == [link for link in links if "@" not in link], links

    @property
    def path(self) -> str:
        return self.browser.current_url.removeprefix(self.base)

    def status(self) -> int:
        """The HTTP status of the page shown (after redirects: the last answer's)."""
        return self.browser.execute_script(
            "return performance.getEntriesByType('navigation')[0].responseStatus")

    def text(self, css: str) -> str:
        return self.browser.find_element(By.CSS_SELECTOR, css).text

    def log_in(self, password: str = PASSWORD) -> None:
        self.open("/login")
        self.browser.find_element(By.NAME, "username").send_keys(USER)
        self.browser.find_element(By.NAME, "password").send_keys(password)
        self.click("form#login button[type=submit]")

    def ids(self) -> list[str]:
        return self.browser.execute_script(
            "return [...document.querySelectorAll('table#queue tr[data-id]')]"
            ".map(tr => tr.dataset.id)")

    def domain_row(self, domain: str) -> WebElement:
        return self.browser.find_element(By.CSS_SELECTOR,
                                         f"table#domains tr[data-domain='{domain}']")

    def shown_state(self, domain: str) -> str:
        """The State cell of the domain's row on the domains page."""
        return self.domain_row(domain).find_element(By.CSS_SELECTOR, "td.state").text


@pytest.fixture
def tab(browser, relay) -> Tab:
    return Tab(browser, relay.relay.metrics_port)


def domain_state(relay, domain: str) -> str:
    """The domain's state as the relay has it ("active", "paused (all)")."""
    return relay.call(relay.relay.state.domain_status(domain)).state


def suppression(relay, recipient: str, domain: str) -> SuppressionReason | None:
    return relay.call(relay.relay.state.suppression(recipient, domain))


def test_login_refuses_a_wrong_password_then_opens_the_domains_page(tab, shot):
    """A page without a session sends to the login; a wrong password shows the login again
    with its error and a 401; the right one opens the domains page."""
    tab.open("/domains")
    assert tab.path == "/login"
    shot("login")

    tab.log_in(password="not-" + PASSWORD)
    assert tab.path == "/login" and tab.status() == 401
    assert tab.text("p.error") == "Wrong username or password."
    shot("login-refused")

    tab.log_in()
    assert tab.path == "/domains" and tab.status() == 200
    assert tab.text("header form.logout span") == USER
    assert {r.get_attribute("data-domain") for r in tab.browser.find_elements(
        By.CSS_SELECTOR, "table#domains tr[data-domain]")} == {"acme.fr", "other.fr"}


def test_pausing_and_resuming_a_domain_shows_in_its_state_and_the_events(relay, backlog, tab, shot):
    """Pause (after the confirmation) and Resume on the domains page change acme.fr's state
    there and in the relay's state, and the events page lists both, by console:billing-app.
    Other.fr's backlog stays held throughout."""
    tab.log_in()
    assert tab.shown_state("other.fr").startswith("paused")
    readme_picture(shot("domains"))

    tab.click("button[type=submit]", within=tab.domain_row("acme.fr"), confirm="Hold acme.fr")
    assert tab.path == "/domains"                   # what was done is not in the URL
    assert tab.text(".flash") == "acme.fr paused: its mail is accepted and waits in the queue"
    assert tab.shown_state("acme.fr").startswith("paused")
    assert domain_state(relay, "acme.fr") == "paused (all)"
    shot("domains-acme-paused")

    tab.click("button[type=submit]", within=tab.domain_row("acme.fr"))      # Resume: no question
    assert tab.text(".flash") == "acme.fr resumed"
    assert tab.shown_state("acme.fr") == "active"
    assert domain_state(relay, "acme.fr") == "active"
    shot("domains-acme-resumed")

    tab.click("nav a[href='/console/events']")
    for kind in ("paused", "resumed"):
        Select(tab.browser.find_element(By.NAME, "kind")).select_by_visible_text(kind)
        Select(tab.browser.find_element(By.NAME, "domain")).select_by_visible_text("acme.fr")
        tab.click("form.filters button[type=submit]")
        newest = tab.browser.find_element(By.CSS_SELECTOR, f"table#events tr.{kind}").text
        assert "domain acme.fr" in newest and f"by console:{USER}" in newest, newest
        shot(f"events-{kind}")
    assert relay.relay.spool.count("other.fr") == BACKLOG


def test_a_domain_page_shows_its_dns_checks_and_records_to_copy(relay, tab, browser, shot):
    """A domain's page runs the DNS checks at first look and lists the records to publish
    (DNS answers NXDOMAIN here: all of them), each with a Copy button that copies it."""
    tab.log_in()
    tab.click("a[href='/console/domains/acme.fr']")
    assert tab.path == "/domains/acme.fr" and tab.text("h1").startswith("acme.fr")
    assert browser.find_elements(By.CSS_SELECTOR, "table#doctor tbody tr")
    records = browser.find_elements(By.CSS_SELECTOR, "div.record pre")
    assert records and any("_domainkey.acme.fr." in r.text for r in records)
    shot("domain-acme")

    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": tab.base.removesuffix("/console"),
        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    copy = browser.find_element(By.CSS_SELECTOR, "div.record button.copy")
    copy.click()
    wait_for(browser, lambda b: copy.text == "Copied", what="the Copy button to say Copied")
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error: ' + e))")
    assert copied == records[0].text.strip()

    tab.open("/domains")
    assert tab.domain_row("acme.fr").find_element(By.CSS_SELECTOR, "td.dns").text == "to fix"


def test_the_queue_pages_through_10000_messages_in_arrival_order(relay, backlog, tab, shot):
    """The queue shows 50 messages a page, oldest first, and Next page goes on from the last
    one shown: no message twice, none skipped. Filtering by state keeps to it across pages;
    a recipient search is POSTed (no address in the URL); a message opens on its own page."""
    tab.log_in()
    tab.click("nav a[href='/console/queue']")
    seen: list[str] = []
    for page in range(4):
        assert tab.ids() == backlog.ids[page * PAGE:(page + 1) * PAGE]
        seen += tab.ids()
        shot(f"queue-page-{page + 1}")
        tab.click("a#next")
    assert seen == sorted(set(seen)) and len(seen) == 4 * PAGE     # increasing, no repeat

    Select(tab.browser.find_element(By.NAME, "state")).select_by_visible_text("held")
    tab.click("form[method=get] button[type=submit]")
    assert "state=held" in tab.path and tab.ids() == backlog.held[:PAGE]
    assert all("(held: paused)" in row.text for row in tab.browser.find_elements(
        By.CSS_SELECTOR, "table#queue tr[data-id]"))
    shot("queue-held")
    tab.click("a#next")
    assert tab.ids() == backlog.held[PAGE:2 * PAGE]
    assert not tab.browser.find_elements(By.ID, "next")          # 100 held: two pages

    Select(tab.browser.find_element(By.NAME, "state")).select_by_visible_text("ready")
    tab.click("form[method=get] button[type=submit]")
    assert tab.ids() == [] and tab.text("table#queue tbody") == "No queued message matches."
    shot("queue-ready")

    Select(tab.browser.find_element(By.NAME, "state")).select_by_visible_text("any")
    tab.click("form[method=get] button[type=submit]")
    tab.browser.find_element(By.NAME, "recipient").send_keys("reader4242@example.net")
    tab.click("form:has(input[name=recipient]) button[type=submit]")
    assert tab.ids() == [backlog.ids[4242]]
    shot("queue-recipient")

    tab.click(f"a[href='/console/queue/{backlog.ids[4242]}']")
    assert tab.text("h1") == f"Message {backlog.ids[4242]}"
    assert tab.text("table#recipients tbody") == "reader4242@example.net queued"
    shot("message")


def test_a_suppression_is_found_and_removed(relay, suppressed, tab, browser, shot):
    """Searching finds the address under both sender domains; Remove (after the
    confirmation) lifts the acme.fr one only: gone from the page and from the state."""
    tab.log_in()
    tab.click("nav a[href='/console/suppressions']")
    assert tab.text("h1") == "Suppressions 242 in all"
    shot("suppressions")

    browser.find_element(By.CSS_SELECTOR, "form#search input[name=q]").send_keys("jeanne.martin")
    tab.click("form#search button[type=submit]")
    rows = browser.find_elements(By.CSS_SELECTOR, "table#suppressions tbody tr")
    assert [r.text.split()[:3] for r in rows] == [[WANTED, "acme.fr", "hard_bounce"],
                                                  [WANTED, "other.fr", "unsubscribed"]]
    shot("suppressions-found")

    tab.click("button[type=submit]", within=rows[0], confirm="Let mail of acme.fr reach")
    assert tab.text(".flash") == "1 address removed for acme.fr"
    assert tab.text("h1") == "Suppressions 241 in all"
    shot("suppressions-removed")
    browser.find_element(By.CSS_SELECTOR, "form#search input[name=q]").send_keys("jeanne.martin")
    tab.click("form#search button[type=submit]")
    rows = browser.find_elements(By.CSS_SELECTOR, "table#suppressions tbody tr")
    assert [r.text.split()[:2] for r in rows] == [[WANTED, "other.fr"]]
    assert suppression(relay, WANTED, "acme.fr") is None
    assert suppression(relay, WANTED, "other.fr") is SuppressionReason.UNSUBSCRIBED


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(relay, tab, browser, shot):
    """A form whose csrf field was taken out is answered 403 "Refused" and nothing changes:
    the Pause button leaves acme.fr active, the Add form suppresses no one."""
    tab.log_in()
    row = tab.domain_row("acme.fr")
    browser.execute_script("arguments[0].querySelector('input[name=csrf]').remove();"
                           " window.confirm = () => true;", row)
    tab.click("button[type=submit]", within=row)
    assert tab.status() == 403 and tab.text("h1") == "Refused"
    assert domain_state(relay, "acme.fr") == "active"
    shot("refused-pause")

    tab.open("/suppressions")
    browser.execute_script("document.querySelector('form#add input[name=csrf]').remove()")
    browser.find_element(By.CSS_SELECTOR, "form#add input[name=recipient]").send_keys(
        "intruder@example.net")
    tab.click("form#add button[type=submit]")
    assert tab.status() == 403 and tab.text("h1") == "Refused"
    assert suppression(relay, "intruder@example.net", "acme.fr") is None
    shot("refused-add")


def readme_picture(png: Path) -> None:
    """The README's picture of the domains page, regenerated where RELAY_README_SCREENSHOT
    says (never into the repository otherwise)."""
    target = os.environ.get("RELAY_README_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)

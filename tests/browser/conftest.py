"""A real headless browser for end-to-end tests: Debian's chromium driven by Selenium
through Debian's chromedriver, screenshots kept as CI artifacts, and a deadline wait.

Fixtures:
- `browser`: a fresh headless Chromium per test (a new profile, so no cookie, session or
  storage survives from one test to the next), quit at teardown. Start costs ~0.3-0.6 s.
  A test that fails leaves a screenshot of its last page, `<test name>-failed.png`.
- `shot`: `shot(name) -> Path` saves a PNG of the page to
  `<screenshots dir>/<test name>-<n>-<name>.png` and keeps it.
- `screenshots_dir`: `$RELAY_SCREENSHOTS`, else `<system temp dir>/relay-screenshots`; the
  end of the run's summary says where.

`wait_for(browser, condition, ...)` waits on a predicate with a deadline (never a sleep).

Without chromium or chromedriver the browser tests are skipped, except under
RELAY_REQUIRE_TOOLS=1 (CI installs both, see `.ci/run`), where that is a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

T = TypeVar("T")

WINDOW = (1280, 900)

# Chromium must never reach past loopback: tests run on machines without a network, and a
# test's outcome must not depend on Google's services answering.
CHROMIUM_ARGUMENTS = [
    "--headless=new",
    "--no-sandbox",                      # CI runs as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",           # a small /dev/shm (containers) crashes renderers
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--no-proxy-server",
    "--disable-background-networking",   # no variations, safe-browsing or update pings
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-extensions",              # Debian's launcher loads /usr/share/chromium/extensions
    "--disable-default-apps",
    "--no-first-run",
    # every host name but localhost fails to resolve, inside Chromium, without asking DNS
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def browser_tool(name: str) -> str:
    """The path of chromium or chromedriver, or skip the test without it. With
    RELAY_REQUIRE_TOOLS=1 (CI installs them) a missing one fails instead.

    tests/deploy/support.py's `tool` does the same, but its failure names promtool's package."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is not installed, and RELAY_REQUIRE_TOOLS=1 requires it "
                    f"(Debian: apt-get install chromium chromium-driver)")
    pytest.skip(f"{name} is not installed")


def chromium_options(binary: str) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    return options


@pytest.fixture
def browser(request, screenshots_dir: Path) -> Iterator[WebDriver]:
    """A headless Chromium of its own for this test, quit at teardown, after a screenshot
    if the test failed. The driver's path is given to Selenium, so Selenium Manager (which
    would download drivers) never runs."""
    binary, driver = browser_tool("chromium"), browser_tool("chromedriver")
    chrome = webdriver.Chrome(options=chromium_options(binary), service=Service(driver))
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            path = screenshots_dir / f"{_file_name(request.node.name)}-failed.png"
            try:
                if chrome.save_screenshot(str(path)):
                    _record(request.config, path)
            except Exception:              # the browser may be what failed: keep the test's error
                pass
    finally:
        chrome.quit()


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 10.0,
             what: str = "condition") -> T:
    """The first truthy value of `condition(browser)` (a predicate or one of Selenium's
    expected_conditions), polled until `timeout` seconds have passed, then AssertionError."""
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                             f"(page: {browser.current_url})") from None


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    """Where screenshots go; kept after the run (CI collects them as artifacts)."""
    directory = Path(os.environ.get("RELAY_SCREENSHOTS")
                     or Path(tempfile.gettempdir()) / "relay-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


_TAKEN = pytest.StashKey[list[Path]]()


def _record(config: pytest.Config, path: Path) -> None:
    config.stash.setdefault(_TAKEN, []).append(path)


def _file_name(node_name: str) -> str:
    """A test's name as a file name: parameters' brackets and slashes become dashes."""
    return re.sub(r"[^\w.-]+", "-", node_name).strip("-")


@pytest.fixture
def shot(request, browser: WebDriver, screenshots_dir: Path) -> Callable[[str], Path]:
    """shot(name) -> the PNG of the current page, `<test name>-<n>-<name>.png`, numbered in
    the order taken."""
    stem = _file_name(request.node.name)
    count = 0

    def take(name: str) -> Path:
        nonlocal count
        count += 1
        path = screenshots_dir / f"{stem}-{count}-{_file_name(name)}.png"
        if not browser.save_screenshot(str(path)):
            raise AssertionError(f"Chromium could not save a screenshot to {path}")
        _record(request.config, path)
        return path
    return take


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep the call phase's report on the item, for `browser`'s screenshot of a failure."""
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


def pytest_terminal_summary(terminalreporter, config) -> None:
    """Say once, at the end of the run, where the screenshots are."""
    taken = config.stash.get(_TAKEN, [])
    if taken:
        terminalreporter.write_line(f"browser screenshots ({len(taken)}): {taken[0].parent}")

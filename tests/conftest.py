"""Shared fixtures: DKIM keys, a test CA, a fake upstream, and a relay running on port 0.

The relay runs in its own thread with its own event loop, exactly as `relay serve` would
run it, and tests talk to it with the standard library's smtplib over real sockets.
"""
from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
import yaml

from relay import config as config_module
from relay.app import Relay
from relay.checks.auth import hash_password
from relay.signing import dkim
from tests.fakes.dns_server import ZoneResolver
from tests.fakes.upstream import FakeUpstream

PASSWORD = "s3cret-passw0rd"
HASH = _HASH = hash_password(PASSWORD)


@pytest.fixture(scope="session")
def dkim_keys(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("dkim")
    paths = {}
    for selector, algorithm in (("rsa1", dkim.RSA_SHA256), ("ed1", dkim.ED25519_SHA256)):
        path = directory / f"acme.fr.{selector}.pem"
        path.write_bytes(dkim.generate_key(algorithm))
        paths[selector] = path
    return paths


@pytest.fixture(scope="session")
def dkim_dns(dkim_keys):
    """A dkimpy `dnsfunc` answering the published keys of acme.fr."""
    records = {f"{sel}._domainkey.acme.fr.": dkim.public_record(dkim.load_key("acme.fr", sel, path))
               for sel, path in dkim_keys.items()}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode())
        return value.encode() if value else None
    return lookup


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca, tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


@pytest.fixture
def client_tls(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def base_config(tmp_path: Path, upstream_port: int, server_cert, dkim_keys, **overrides) -> dict:
    """A relay.yaml as a dict: three listeners on port 0, users, acme.fr routed to the fake."""
    cert, key = server_cert
    data = {
        "server": {
            "hostname": "relay.test",
            "listeners": [
                {"name": "submission", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
                {"name": "submissions", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
                {"name": "local", "address": "127.0.0.1", "port": 0, "tls": "none"},
            ],
            "tls": {"certificate": str(cert), "private_key": str(key)},
            "max_message_size": "1MB",
            "max_recipients": 50,
        },
        # DNS never leaves the machine: nothing listens there, so questions fail at once
        # (in-process relays get an in-memory resolver instead, see RunningRelay)
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
        "spool": {"path": str(tmp_path / "spool"), "max_age": "1h",
                  "retry": {"initial": "0.2s", "max": "1s"}},
        "users": [
            {"username": "billing-app", "password_hash": _HASH, "senders": ["acme.fr", "news@other.fr"]},
            {"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]},
        ],
        "domains": {
            "acme.fr": {"route": "provider", "dkim": [
                {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])},
                {"selector": "ed1", "private_key": str(dkim_keys["ed1"]), "algorithm": "ed25519-sha256"}]},
            "other.fr": {"route": "provider"},
        },
        "routes": {"provider": {"host": "127.0.0.1", "port": upstream_port, "tls": "none",
                                "max_connections": 2, "timeout": "10s"}},
        # the delivery process's event log, as log shippers read it (tests parse it)
        "logging": {"format": "json"},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return data


class RunningRelay:
    """A Relay on its own event loop thread, like `relay serve`, with its ports known."""

    def __init__(self, config, clock=None, resolver=None) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.relay = self.call(self._make(clock, resolver))
        self.call(self.relay.start())

    async def _make(self, clock, resolver):
        return Relay(self.config, clock=clock, resolver=resolver)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, listener: str) -> int:
        return self.relay.port(listener)

    def stop(self) -> None:
        if self.loop.is_closed():                 # stopped by the test already
            return
        self.call(self.relay.stop(drain_timeout=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def make_relay(tmp_path, upstream, server_cert, dkim_keys):
    """make_relay(**overrides) -> RunningRelay; stopped at the end of the test."""
    started: list[RunningRelay] = []

    def make(clock=None, raw: dict | None = None, resolver=None, **overrides) -> RunningRelay:
        """The resolver defaults to an empty in-memory zone (every name NXDOMAIN), unless the
        test gives one or names its own nameservers in `dns`."""
        data = raw or base_config(tmp_path, upstream.port, server_cert, dkim_keys, **overrides)
        config = config_module.parse(yaml.safe_dump(data), tmp_path)
        if resolver is None and config.dns.nameservers == ["127.0.0.1:9"]:
            resolver = ZoneResolver({})
        running = RunningRelay(config, clock, resolver)
        started.append(running)
        return running
    yield make
    for running in started:
        running.stop()


def message(from_addr: str = "Acme Billing <billing@acme.fr>", to: str = "client@example.net",
            subject: str = "Invoice 42", body: str = "Please find your invoice.\r\n",
            extra: str = "") -> str:
    return f"From: {from_addr}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n{body}"


def submit(port: int, mail_from: str, rcpts: list[str], data: str | bytes, *,
           tls: str = "none", context: ssl.SSLContext | None = None,
           login: tuple[str, str] | None = None) -> dict:
    """Send one message with smtplib; returns the refused recipients (smtplib's contract)."""
    if tls == "implicit":
        client = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    with client:
        client.ehlo("app.test")
        if tls == "starttls":
            client.starttls(context=context)
            client.ehlo("app.test")
        if login:
            client.login(*login)
        return client.sendmail(mail_from, rcpts, data)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def eventually(predicate, what: str, timeout: float = 15.0) -> None:
    """wait_until for a test's own event loop: yields to it while waiting. `predicate` may
    be a coroutine function."""
    deadline = time.monotonic() + timeout
    while not (await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


def readyz(port: int) -> tuple[int, dict]:
    """GET /readyz on the metrics listener: (status, the JSON body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

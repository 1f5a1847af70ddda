"""How fast the web console's pages answer with a full queue and a long suppression list.

Builds a spool with `--queued` messages (10,000 by default; the domain paused, so they stay
queued) and `--suppressions` suppressions (1,000), starts `relay serve` on it (a real
process, DNS to a closed port so the domain page's doctor run fails fast), logs in, and
times each page `--runs` times over HTTP on loopback (connect to last byte): the median and
the slowest. The issue's target: every page under 100 ms.

    .venv/bin/python bench/console.py [--queued 10000] [--suppressions 1000] [--runs 30]
"""
from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.checks.auth import hash_password  # noqa: E402
from relay.clock import SystemClock  # noqa: E402
from relay.config import load  # noqa: E402
from relay.compose import open_stores  # noqa: E402
from relay.model import QueuedMessage, Recipient, new_queue_id  # noqa: E402
from relay.signing import dkim  # noqa: E402
from relay.state.suppressions import SuppressionReason  # noqa: E402

PASSWORD = "bench-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path, metrics_port: int) -> Path:
    key = root / "acme.fr.rly1.pem"
    key.write_bytes(dkim.generate_key())
    path = root / "relay.yaml"
    path.write_text(json.dumps({
        "server": {"listeners": [{"name": "local", "address": "127.0.0.1",
                                  "port": free_port(), "tls": "none"}]},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
        "spool": {"path": str(root / "spool")},
        "metrics": {"address": "127.0.0.1", "port": metrics_port},
        "users": [{"username": "admin", "password_hash": hash_password(PASSWORD),
                   "senders": ["acme.fr"]}],
        "console": {"enabled": True, "users": ["admin"]},
        "blocklists": {"ip_zones": [], "domain_zones": []},
        "domains": {"acme.fr": {"route": "outbox",
                                "dkim": [{"selector": "rly1", "private_key": str(key)}]}},
        "routes": {"outbox": {"outbox": str(root / "outbox")}},
    }))
    return path


def seed(config_path: Path, queued: int, suppressions: int) -> None:
    config = load(config_path)
    spool, state = open_stores(config, SystemClock())
    spool.start()

    async def fill() -> None:
        await state.pause("acme.fr", "benchmark: keep the queue still")
        now = time.time()
        for start in range(0, queued, 1000):
            await spool.enqueue(*[QueuedMessage(
                new_queue_id(), "billing@acme.fr", [Recipient(f"client{i}@example.net")],
                "acme.fr", "outbox", b"Subject: invoice\r\n\r\n" + b"x" * 2000 + b"\r\n",
                now + i * 0.001) for i in range(start, min(start + 1000, queued))])
        for i in range(suppressions):
            await state.suppress(f"gone{i}@example.net", "acme.fr", SuppressionReason.HARD_BOUNCE)
        await state.close()
    asyncio.run(fill())
    spool.close()


class Client:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/console"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.last = ""

    def get(self, path: str, form: dict | None = None) -> float:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        started = time.perf_counter()
        with self.opener.open(self.base + path, data, timeout=30) as response:
            self.last = response.read().decode()
        return (time.perf_counter() - started) * 1000

    def csrf(self) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.last).group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--suppressions", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="relay-console-bench-"))
    port = free_port()
    config_path = write_config(root, port)
    seed(config_path, args.queued, args.suppressions)
    relay = subprocess.Popen([sys.executable, "-m", "relay.cli", "serve", "-c", str(config_path)],
                             stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        client = Client(port)
        deadline = time.time() + 30
        while True:
            try:
                client.get("/login")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        client.get("/login", {"csrf": client.csrf(), "username": "admin", "password": PASSWORD})
        client.get("/domains/acme.fr")                     # runs the doctor once (cached after)
        client.get("/queue")
        middle = re.findall(r'data-id="([^"]+)"', client.last)[0]
        client.get("/queue?after=" + middle)
        pages = {
            "domains": lambda: client.get("/domains"),
            "domain": lambda: client.get("/domains/acme.fr"),
            "queue (first page)": lambda: client.get("/queue"),
            "queue (held, acme.fr)": lambda: client.get("/queue?state=held&domain=acme.fr"),
            "queue (a recipient)": lambda: client.get("/queue", {
                "csrf": csrf, "recipient": f"client{args.queued - 1}@example.net"}),
            "message": lambda: client.get("/queue/" + middle),
            "suppressions": lambda: client.get("/suppressions"),
            "suppressions (search)": lambda: client.get("/suppressions", {"csrf": csrf, "q": "gone99"}),
            "suppressions.csv": lambda: client.get("/suppressions.csv"),
            "events": lambda: client.get("/events"),
        }
        client.get("/domains")
        csrf = client.csrf()
        print(f"{args.queued} queued, {args.suppressions} suppressions, {args.runs} runs each")
        print(f"{'page':<24} {'median ms':>10} {'max ms':>8}")
        for name, fetch in pages.items():
            times = [fetch() for _ in range(args.runs)]
            print(f"{name:<24} {statistics.median(times):>10.1f} {max(times):>8.1f}")
    finally:
        relay.terminate()
        relay.wait(30)


if __name__ == "__main__":
    main()

"""What the tests of deploy/ share: where things are, external tools, PromQL metric names,
the fleet's pieces (compose's relay services, the relay pod, a redis-server run with a
deployment's arguments)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import redis
import yaml

from tests.fakes.redis_server import redis_server_path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_RELAY_YAML = DEPLOY / "compose" / "relay.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "relay.json"


def tool(name: str, required_in_ci: bool = False) -> str:
    """The path of an external program, or skip the test without it. With
    RELAY_REQUIRE_TOOLS=1 (CI installs them) a missing required tool fails instead."""
    path = shutil.which(name)
    if path:
        return path
    if required_in_ci and os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is not installed, and RELAY_REQUIRE_TOOLS=1 requires it "
                    f"(Debian: apt-get install prometheus, which ships promtool)")
    pytest.skip(f"{name} is not installed")


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_METRIC = re.compile(r"(?<![\w:.$])relay_[a-zA-Z0-9_]*(?![\w(])")


def metric_names(expr: str) -> set[str]:
    """The relay_* series an expression selects: PromQL tokens starting with `relay_`,
    outside quoted label values."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def kubernetes_documents() -> dict[str, list[dict]]:
    """Every manifest under deploy/kubernetes (kustomization.yaml aside), by file name."""
    return {path.name: load_all_yaml(path) for path in sorted(KUBERNETES.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


def kubernetes_object(kind: str, name: str) -> dict:
    for documents in kubernetes_documents().values():
        for doc in documents:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} named {name} under {KUBERNETES}")


def kubernetes_pod(name: str) -> dict:
    """The pod template's spec of the StatefulSet `name` (relay, redis)."""
    return kubernetes_object("StatefulSet", name)["spec"]["template"]["spec"]


def compose_services() -> dict[str, dict]:
    return load_yaml(COMPOSE_FILE)["services"]


def compose_relays() -> dict[str, dict]:
    """The services of compose.yaml that run `relay serve`: the nodes of the demo fleet."""
    return {name: service for name, service in compose_services().items()
            if service.get("command", [None])[0] == "serve"}


@contextmanager
def redis_server(arguments: list[str], directory: Path, timeout: float = 10.0
                 ) -> Iterator[redis.Redis]:
    """redis-server run with a deployment's `arguments` (what follows `redis-server` in its
    command), listening on a unix socket in `directory` only and keeping its data there;
    yields a client once it answers PING."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    process = subprocess.Popen(
        [redis_server_path(), *arguments, "--port", "0", "--unixsocket", str(sock),
         "--unixsocketperm", "700", "--dir", str(directory), "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"redis-server {' '.join(arguments)} exited: "
                                     f"{process.stdout.read()}")
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer PING in time")
            time.sleep(0.02)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def assert_durable_redis(image: str, argv: list[str]) -> None:
    """A deployment's Redis: an official image pinned by version, run with the append-only
    file on and no eviction (relay's counters must not be dropped to make room)."""
    assert re.fullmatch(r"redis:\d+\.\d+(\.\d+)?-alpine", image), image
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"

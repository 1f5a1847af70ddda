"""The relay.yaml files of deploy/ pass `relay check` (keys, certificates and secrets included)
in the environment their deployment gives relay: each compose relay's variables (the Redis
URL among them) and its dkim-key service's key; the Kubernetes pod's variables, Secrets and
files. Without the Redis URL the check fails. With compose's relay.yaml, `relay fleet status`
reaches a redis-server run as compose runs it. Paths under /etc/relay and /var/lib/relay are
moved into a temporary directory; nothing else changes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from relay.config import parse
from tests.deploy.support import (COMPOSE_FILE, COMPOSE_RELAY_YAML, DEPLOY, compose_relays,
                                  kubernetes_documents, kubernetes_object, kubernetes_pod,
                                  load_yaml, redis_server)

RELAY_DIRS = ("/etc/relay", "/var/lib/relay")


def moved(text: str, root: Path) -> str:
    for directory in RELAY_DIRS:
        text = text.replace(directory, f"{root}{directory}")
    return text


def relay_env(root: Path, variables: dict[str, str]) -> dict[str, str]:
    """A clean environment: the deployment's variables and a `relay` command on PATH."""
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "relay"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relay.cli "$@"\n')
    shim.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8", **variables}


def relay(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def compose_service(name: str) -> dict:
    return load_yaml(COMPOSE_FILE)["services"][name]


def lay_out_compose_relay(name: str, root: Path) -> tuple[Path, dict[str, str]]:
    """compose/relay.yaml where the relay service `name`'s -c points (moved under `root`), and
    that service's environment; asserts the file mounted there is compose/relay.yaml."""
    service = compose_service(name)
    config_path = service["command"][service["command"].index("-c") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert (DEPLOY / mounts[config_path]).resolve() == COMPOSE_RELAY_YAML
    target = Path(moved(config_path, root))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(moved(COMPOSE_RELAY_YAML.read_text(), root))
    return target, {k: str(v) for k, v in (service.get("environment") or {}).items()}


def make_compose_dkim_key(root: Path, env: dict[str, str]) -> None:
    """Run the dkim-key service's script, twice: it makes the key, then keeps it."""
    [script] = compose_service("dkim-key")["command"]
    (root / "etc/relay/dkim").mkdir(parents=True, exist_ok=True)     # the relay-dkim volume
    for attempt in ("creates the key", "keeps it"):
        before = {p: p.read_bytes() for p in (root / "etc/relay/dkim").iterdir()}
        made = subprocess.run(["/bin/sh", "-c", moved(script, root)], env=env, cwd=root,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, (attempt, made.stderr)
        assert all(p.read_bytes() == data for p, data in before.items()), attempt


@pytest.mark.parametrize("name", sorted(compose_relays()))
def test_compose_relay_yaml_passes_relay_check(name, tmp_path):
    """compose/relay.yaml, mounted where each relay service's -c points, is valid once the
    dkim-key service has run, with that service's environment; the dkim-key service is
    idempotent (it keeps the key it made)."""
    target, variables = lay_out_compose_relay(name, tmp_path)
    env = relay_env(tmp_path, variables)
    make_compose_dkim_key(tmp_path, env)
    checked = relay(["check", "-c", str(target)], env, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_compose_relay_yaml_needs_the_redis_url(tmp_path):
    """Without the variable state.url_env names, `relay check` refuses compose/relay.yaml and
    says which variable is missing: the relay services' environment is what makes it valid."""
    target, variables = lay_out_compose_relay("relay", tmp_path)
    url_env = load_yaml(COMPOSE_RELAY_YAML)["state"]["url_env"]
    assert url_env in variables
    env = relay_env(tmp_path, {k: v for k, v in variables.items() if k != url_env})
    make_compose_dkim_key(tmp_path, env)
    checked = relay(["check", "-c", str(target)], env, tmp_path)
    assert checked.returncode != 0
    assert url_env in checked.stderr


def test_compose_relay_reaches_a_redis_run_as_compose_runs_it(tmp_path):
    """redis-server started with the redis service's command (on a unix socket here) serves
    `relay fleet status` run with compose/relay.yaml: reachable, the node unnamed in the
    file (its hostname names it)."""
    target, variables = lay_out_compose_relay("relay", tmp_path)
    command = compose_service("redis")["command"]
    assert command[0] == "redis-server"
    with redis_server(command[1:], tmp_path / "redis") as client:
        socket_path = client.connection_pool.connection_kwargs["path"]
        url_env = load_yaml(COMPOSE_RELAY_YAML)["state"]["url_env"]
        env = relay_env(tmp_path, {**variables, url_env: f"unix://{socket_path}"})
        make_compose_dkim_key(tmp_path, env)
        status = relay(["fleet", "status", "-c", str(target)], env, tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "redis: reachable" in status.stdout
    assert f"state: redis ({url_env}), node (hostname)" in status.stdout


def test_compose_relay_yaml_is_the_demo_the_issue_describes(monkeypatch):
    """State in Redis, JSON logs, metrics on every address at 9464, mail to the Mailpit
    service in plain SMTP without an SPF gate, and a demo user with a password."""
    service = compose_service("relay")
    for name, value in (service.get("environment") or {}).items():
        monkeypatch.setenv(name, str(value))
    config = parse(COMPOSE_RELAY_YAML.read_text(), COMPOSE_RELAY_YAML.parent)
    assert config.state.backend == "redis"
    assert (config.metrics.address, config.metrics.port) == ("0.0.0.0", 9464)
    assert config.logging.format == "json"
    [route] = config.routes.values()
    assert (route.host, route.port, route.tls) == ("mailpit", 1025, "none")
    assert route.spf is None or route.spf.mode == "off"
    assert "mailpit" in load_yaml(COMPOSE_FILE)["services"]
    assert any(user.password_hash for user in config.users)
    assert config.server.tls.self_signed


def test_kubernetes_relay_yaml_passes_relay_check(tmp_path, monkeypatch):
    """The ConfigMap's relay.yaml, mounted where the container's -c points, is valid with the
    relay pod's variables (its plain values, the Redis URL among them, and those it takes
    from secret.example.yaml), DKIM keys in the files the relay-dkim Secret holds, and a
    certificate in the relay-tls Secret's files."""
    [container] = kubernetes_pod("relay")["containers"]
    config_path = container["args"][container["args"].index("-c") + 1]
    text = kubernetes_object("ConfigMap", "relay-config")["data"]["relay.yaml"]
    target = Path(moved(config_path, tmp_path))
    target.parent.mkdir(parents=True)
    target.write_text(moved(text, tmp_path))

    secrets = {doc["metadata"]["name"]: doc["stringData"]
               for doc in kubernetes_documents()["secret.example.yaml"]}
    variables = {}
    for item in container["env"]:
        if "value" in item:
            variables[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            variables[item["name"]] = secrets[ref["name"]][ref["key"]]
    env = relay_env(tmp_path, variables)

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    config = parse(text, tmp_path)                  # to list the files relay will read
    for name, domain in config.domains.items():
        for key in domain.dkim:
            directory = Path(moved(str(key.private_key.parent), tmp_path))
            made = relay(["keys", "generate", name, "--selector", key.selector, "--directory",
                          str(directory), "--algorithm", key.algorithm or "rsa-sha256"], env, tmp_path)
            assert made.returncode == 0, made.stderr
            assert (directory / key.private_key.name).is_file(), "the Secret's file name differs"
    cert = trustme.CA().issue_cert(config.server.hostname)
    for path in (config.server.tls.certificate, config.server.tls.private_key):
        Path(moved(str(path.parent), tmp_path)).mkdir(parents=True, exist_ok=True)
    cert.cert_chain_pems[0].write_to_path(moved(str(config.server.tls.certificate), tmp_path))
    cert.private_key_pem.write_to_path(moved(str(config.server.tls.private_key), tmp_path))

    checked = relay(["check", "-c", str(target)], env, tmp_path)
    assert checked.returncode == 0, checked.stderr

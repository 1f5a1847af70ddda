"""The relay.yaml files of deploy/ pass `relay check` (keys, certificates and secrets included)
in the environment their deployment gives relay: compose's variables and its dkim-key
service's key; the Kubernetes Secrets' variables and files. Paths under /etc/relay and
/var/lib/relay are moved into a temporary directory; nothing else changes."""
import os
import subprocess
import sys
from pathlib import Path

import trustme

from relay.config import parse
from tests.deploy.support import (COMPOSE_FILE, COMPOSE_RELAY_YAML, DEPLOY, kubernetes_documents,
                                  kubernetes_object, load_yaml)

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


def test_compose_relay_yaml_passes_relay_check(tmp_path):
    """compose/relay.yaml, mounted where the relay service's -c points, is valid once the
    dkim-key service has run, with the relay service's environment; the dkim-key service is
    idempotent (it keeps the key it made)."""
    service = compose_service("relay")
    config_path = service["command"][service["command"].index("-c") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert (DEPLOY / mounts[config_path]).resolve() == COMPOSE_RELAY_YAML
    target = Path(moved(config_path, tmp_path))
    target.parent.mkdir(parents=True)
    target.write_text(moved(COMPOSE_RELAY_YAML.read_text(), tmp_path))
    env = relay_env(tmp_path, {k: str(v) for k, v in (service.get("environment") or {}).items()})

    [script] = compose_service("dkim-key")["command"]
    (tmp_path / "etc/relay/dkim").mkdir(parents=True)     # the relay-dkim volume
    for attempt in ("creates the key", "keeps it"):
        before = {p: p.read_bytes() for p in (tmp_path / "etc/relay/dkim").iterdir()}
        made = subprocess.run(["/bin/sh", "-c", moved(script, tmp_path)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, (attempt, made.stderr)
        assert all(p.read_bytes() == data for p, data in before.items()), attempt

    checked = relay(["check", "-c", str(target)], env, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_compose_relay_yaml_is_the_demo_the_issue_describes(monkeypatch):
    """JSON logs, metrics on every address at 9464, mail to the Mailpit service in plain SMTP
    without an SPF gate, and a demo user with a password."""
    service = compose_service("relay")
    for name, value in (service.get("environment") or {}).items():
        monkeypatch.setenv(name, str(value))
    config = parse(COMPOSE_RELAY_YAML.read_text(), COMPOSE_RELAY_YAML.parent)
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
    variables the Deployment takes from secret.example.yaml, DKIM keys in the files the
    relay-dkim Secret holds, and a certificate in the relay-tls Secret's files."""
    [container] = kubernetes_object("Deployment", "relay")["spec"]["template"]["spec"]["containers"]
    config_path = container["args"][container["args"].index("-c") + 1]
    text = kubernetes_object("ConfigMap", "relay-config")["data"]["relay.yaml"]
    target = Path(moved(config_path, tmp_path))
    target.parent.mkdir(parents=True)
    target.write_text(moved(text, tmp_path))

    secrets = {doc["metadata"]["name"]: doc["stringData"]
               for doc in kubernetes_documents()["secret.example.yaml"]}
    variables = {}
    for item in container["env"]:
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

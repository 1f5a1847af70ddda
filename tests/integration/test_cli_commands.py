"""The operator's commands: `relay check`, `relay users hash`, `relay keys generate`.

`relay check` validates a configuration and prints it without secrets (exit 0), or prints one
line per problem naming its YAML path (exit 1). `config/relay.example.yaml` must always load.
`relay users hash` turns a password on stdin into the hash `users[].password_hash` expects.
`relay keys generate` writes a private DKIM key (mode 0600, never over an existing one) and
prints the DNS TXT record whose public key verifies what relay signs with it.
"""
from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import dkim as dkimpy
import pytest
import yaml

from relay import config as config_module
from relay.checks import content
from relay.checks.auth import check_password
from relay.errors import ConfigError
from relay.signing import dkim
from tests.conftest import HASH, base_config, message

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "relay.example.yaml"


def relay_cli(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def good_config(tmp_path, server_cert, dkim_keys) -> dict:
    return base_config(tmp_path, 2525, server_cert, dkim_keys)


def check(tmp_path: Path, data: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data))
    return relay_cli("check", "-c", str(path))


# --- relay check ---------------------------------------------------------------------

def test_check_accepts_a_good_config_and_prints_it_without_secrets(tmp_path, good_config):
    """Exit 0; the effective config is printed as YAML, password hashes replaced by "(set)"."""
    result = check(tmp_path, good_config)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr
    assert HASH not in result.stdout and "scrypt$" not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["users"][0]["password_hash"] == "(set)"
    assert printed["spool"]["max_age"] == 3600.0                 # units parsed at load
    assert printed["server"]["listeners"][2]["name"] == "local"


def test_check_warns_about_a_networks_user_no_listener_lets_in(tmp_path, good_config):
    """Exit 0, and a warning naming the user: with only submission ports (auth required),
    `networks` clients would still have to AUTH."""
    data = copy.deepcopy(good_config)
    data["server"]["listeners"] = data["server"]["listeners"][:2]        # no tls: none listener
    result = check(tmp_path, data)
    assert result.returncode == 0, result.stderr
    assert "users[1].networks: no submission listener has auth: optional" in result.stderr
    assert "must still AUTH as erp" in result.stderr
    assert "users[1].networks" not in check(tmp_path, good_config).stderr


def _broken(config: dict, keys: tuple, value) -> dict:
    data = copy.deepcopy(config)
    node = data
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize("keys, value, error", [
    (("server", "listeners", 0, "tls"), "ssl", r"server\.listeners\[0\]\.tls: .*'ssl'"),
    (("spool", "max_age"), "forever", r'spool\.max_age: expected a duration like "30s".*forever'),
    (("spool", "colour"), "blue", r"spool\.colour: unknown key"),
    (("domains", "acme.fr", "route"), "nowhere", r"domains\.acme\.fr\.route: no route named 'nowhere'"),
    (("routes", "provider", "password_env"), "RELAY_TEST_SURELY_UNSET",
     r"routes\.provider\.password_env: environment variable RELAY_TEST_SURELY_UNSET is not set"),
    (("domains", "acme.fr", "dkim", 0, "private_key"), "/nonexistent/acme.fr.rsa1.pem",
     r"domains\.acme\.fr\.dkim\[0\]\.private_key: cannot read /nonexistent/acme\.fr\.rsa1\.pem"),
    (("server", "tls", "certificate"), "/nonexistent/cert.pem",
     r"server\.tls\.certificate: .*/nonexistent/cert\.pem"),
], ids=["bad-literal", "bad-duration", "unknown-key", "missing-route", "unset-env",
        "missing-dkim-key", "missing-tls-certificate"])
def test_check_names_the_yaml_path_of_each_error(tmp_path, good_config, keys, value, error):
    """Exit 1, and each error line starts with the YAML path of the offending key."""
    result = check(tmp_path, _broken(good_config, keys, value))
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert re.match(r"relay: " + error, result.stderr), result.stderr


def test_check_of_a_missing_file_names_the_file(tmp_path):
    """A configuration file that cannot be read: exit 1, one line naming the file and why."""
    result = relay_cli("check", "-c", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"relay: {tmp_path / 'absent.yaml'}: cannot read the "
                                     "configuration: No such file or directory")


def test_example_config_loads(monkeypatch):
    """config/relay.example.yaml parses with its secret in the environment, and names it without.

    Its DKIM key paths are placeholders, so only the configuration is loaded, not the keys."""
    monkeypatch.setenv("BREVO_SMTP_KEY", "xkeysib-test")
    monkeypatch.setenv("RELAY_UNSUB_SECRET", "an-example-secret-of-32-bytes-xx")
    monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", "a-webhook-token")
    config = config_module.load(EXAMPLE)
    assert [l.name for l in config.server.listeners] == ["submission", "submissions", "local", "feedback"]
    assert config.routes["brevo"].password() == "xkeysib-test"
    assert config.domains["acme.fr"].dkim[1].algorithm == "ed25519-sha256"
    assert config.spool.max_age == 5 * 86400
    assert config.unsubscribe_mode == "inject" and config.limits.bulk.rate.text == "300/min"
    assert config.reputation.complaint_rate.limit == 0.001 and set(config.feedback.webhooks) == {"brevo", "mailjet"}
    assert [l.role for l in config.server.listeners][-1] == "feedback"

    monkeypatch.delenv("BREVO_SMTP_KEY")
    with pytest.raises(ConfigError) as missing:
        config_module.load(EXAMPLE)
    assert any("routes.brevo.password_env" in line for line in missing.value.errors)


# --- relay users hash ----------------------------------------------------------------

def test_users_hash_prints_a_hash_that_verifies_the_password():
    """The password on stdin becomes a scrypt hash that checks it (and nothing else); empty is refused."""
    result = relay_cli("users", "hash", stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert check_password("correct horse battery", stored)
    assert not check_password("correct horse", stored)

    empty = relay_cli("users", "hash", stdin="")
    assert empty.returncode == 1 and "empty password" in empty.stderr


# --- relay keys generate -------------------------------------------------------------

def _published_record(stdout: str, selector: str, domain: str) -> str:
    """The TXT value printed for `selector._domainkey.domain.`, its strings concatenated."""
    match = re.search(rf"^\s*{re.escape(selector)}\._domainkey\.{re.escape(domain)}\. IN TXT (.+)$",
                      stdout, re.MULTILINE)
    assert match, stdout
    strings = re.findall(r'"([^"]*)"', match.group(1))
    assert all(len(s) <= 255 for s in strings)
    return "".join(strings)


@pytest.mark.parametrize("algorithm", [None, dkim.ED25519_SHA256])
def test_keys_generate_writes_a_private_key_and_prints_its_record(tmp_path, algorithm):
    """The PEM is mode 0600 and not overwritten; a signature by it verifies against the TXT record."""
    extra = ["--algorithm", algorithm] if algorithm else []
    result = relay_cli("keys", "generate", "acme.fr", "--selector", "s1",
                       "--directory", str(tmp_path), *extra)
    assert result.returncode == 0, result.stderr
    pem = tmp_path / "acme.fr.s1.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    record = _published_record(result.stdout, "s1", "acme.fr")
    assert record.startswith("v=DKIM1; k=" + ("ed25519" if algorithm else "rsa") + "; p=")
    assert str(pem) in result.stdout                           # the relay.yaml snippet

    key = dkim.load_key("acme.fr", "s1", pem, algorithm)
    parsed = content.parse(message().encode())
    signed = parsed.serialize(dkim.Signer({"acme.fr": [key]}).sign("acme.fr", parsed.headers, parsed.body))

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record.encode() if name == b"s1._domainkey.acme.fr." else None
    assert dkimpy.DKIM(signed).verify(dnsfunc=dns)

    before = pem.read_bytes()
    again = relay_cli("keys", "generate", "acme.fr", "--selector", "s1",
                      "--directory", str(tmp_path), *extra)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr and str(pem) in again.stderr
    assert pem.read_bytes() == before

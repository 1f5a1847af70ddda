"""SIGHUP (`relay reload`) applies a changed relay.yaml to the next decisions without dropping
an open session or queued mail; an invalid file is refused, logged, and the running
configuration stays."""
from __future__ import annotations

import signal
import smtplib
import subprocess
import sys

import pytest
import yaml

from tests.conftest import message, wait_until
from tests.processes import RelayProcess, free_port


def relay_cli(path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args, "-c", str(path)],
                          capture_output=True, text=True, timeout=30)


def try_send(port: int, sender: str) -> int:
    """The reply code of MAIL FROM for `sender` in a fresh session (250 = accepted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        return client.docmd("MAIL", f"FROM:<{sender}>")[0]


@pytest.fixture
def setup(tmp_path, dkim_keys, upstream):
    port = free_port()
    config = {
        "server": {"hostname": "relay.test", "listeners": [
            {"name": "local", "address": "127.0.0.1", "port": port, "tls": "none"}]},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": "1s"},
        "spool": {"path": str(tmp_path / "spool"), "retry": {"initial": "1h", "max": "1h"}},
        "users": [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}],
        "domains": {"acme.fr": {"route": "provider", "dkim": [
                        {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])}]},
                    "other.fr": {"route": "provider"}},
        "routes": {"provider": {"host": "127.0.0.1", "port": upstream.port, "tls": "none"}},
    }
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    process = RelayProcess(path, port).start()
    yield process, path, config
    process.stop()


def test_reload_applies_valid_changes_and_refuses_invalid_ones(setup, upstream):
    """A sender allowed by the new file is accepted after `relay reload`; an open session and
    a queued message survive; a broken file is refused and changes nothing."""
    process, path, config = setup
    port = process.port
    assert try_send(port, "news@other.fr") == 550

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as queued_client:
        queued_client.sendmail("billing@acme.fr", ["tempfail@example.net"], message())
    open_session = smtplib.SMTP("127.0.0.1", port, timeout=10)
    open_session.ehlo("app.test")

    config["users"][0]["senders"] = ["acme.fr", "other.fr"]
    path.write_text(yaml.safe_dump(config))
    result = relay_cli(path, "reload")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: try_send(port, "news@other.fr") == 250, what="the new sender to be allowed")

    assert open_session.noop()[0] == 250                  # the session opened before is alive
    open_session.sendmail("billing@acme.fr", ["client@example.net"], message(subject="after"))
    open_session.quit()
    upstream.wait_for(lambda msgs: [m for m in msgs if b"Subject: after" in m.data],
                      what="mail sent after the reload")

    path.write_text(path.read_text() + "\nbogus_key: 1\n")
    refused = relay_cli(path, "reload")                    # the CLI checks the file first
    assert (refused.returncode, refused.stderr) == (1, "relay: bogus_key: unknown key\n")
    process.proc.send_signal(signal.SIGHUP)                # SIGHUP itself, as systemd sends it
    wait_until(lambda: "reload refused" in process.log.read_text(), what="the refusal in the log")
    assert "bogus_key: unknown key" in process.log.read_text()
    assert try_send(port, "news@other.fr") == 250          # the running configuration stayed
    assert process.proc.poll() is None
    path.write_text(yaml.safe_dump(config))               # a valid file again, for the CLI
    listed = relay_cli(path, "queue", "list").stdout       # the deferred message survived both
    assert "1 message(s) queued" in listed and "<billing@acme.fr>" in listed


def test_reload_without_a_running_relay_is_a_clear_error(tmp_path, dkim_keys):
    """`relay reload` with no relay running says so and exits 1."""
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"listeners": [{"name": "local", "port": 2525, "tls": "none"}]},
        "spool": {"path": str(tmp_path / "spool")}}))
    result = relay_cli(path, "reload")
    assert result.returncode == 1
    assert result.stderr.startswith("relay: no running relay found")

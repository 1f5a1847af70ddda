"""`relay queue list|show|retry|delete` lets an operator inspect and act on the spool.

The commands open the spool of the configuration they are given, whether or not a relay is
running on it: `list` and `show` describe a deferred message with its recipients and the
provider's last reply, `retry` makes it due now, `delete` removes it for good, and an
unknown ID is an error (exit 1) that says so.
"""
from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from relay import config as config_module
from tests.conftest import RunningRelay, base_config, message, wait_until

NO_RETRY_SOON = {"initial": "1h", "max": "1h"}    # a deferred message waits unless told


@pytest.fixture
def config_file(tmp_path, upstream, server_cert, dkim_keys):
    """config_file(**overrides) -> (the config as data, tmp_path/relay.yaml holding it)."""
    def write(**overrides) -> tuple[dict, Path]:
        data = base_config(tmp_path, upstream.port, server_cert, dkim_keys, **overrides)
        path = tmp_path / "relay.yaml"
        path.write_text(yaml.safe_dump(data))
        return data, path
    return write


@pytest.fixture
def relays(tmp_path):
    """relays(data) -> a RunningRelay that this test may stop itself; stopped at the end."""
    running: list[RunningRelay] = []

    def start(data: dict) -> RunningRelay:
        running.append(RunningRelay(config_module.parse(yaml.safe_dump(data), tmp_path)))
        return running[-1]
    yield start
    for relay in running:
        if not relay.loop.is_closed():
            relay.stop()


def relay_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", "queue", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=30)


def submit_for_id(port: int, rcpt: str, subject: str) -> str:
    """Submit one message and return the queue id from `250 2.0.0 Ok: queued as <id>`."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail("billing@acme.fr")[0] == 250
        assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(message(to=rcpt, subject=subject))
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def test_list_and_show_describe_a_deferred_message(config_file, make_relay, upstream):
    """list names the message with its sender and counts; show gives recipients and the last reply."""
    data, path = config_file(**{"spool.retry": NO_RETRY_SOON})
    relay = make_relay(raw=data)
    queue_id = submit_for_id(relay.port("local"), "tempfail@example.net", "Invoice 12")
    wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts == 1],
               what="the first, deferred attempt")

    listed = relay_cli(path, "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.startswith(queue_id)]
    columns = row.split()       # ID, QUEUED (2), SIZE, PENDING, TRIES, NEXT ATTEMPT (2), ROUTE, SENDER
    assert columns[4:6] == ["1", "1"]
    assert columns[-2:] == ["provider", "<billing@acme.fr>"]
    assert listed.stdout.rstrip().endswith("1 message(s) queued")

    shown = relay_cli(path, "show", queue_id)
    assert shown.returncode == 0, shown.stderr
    details, end = json.JSONDecoder().raw_decode(shown.stdout)
    assert details["id"] == queue_id and details["from"] == "billing@acme.fr"
    assert details["attempts"] == 1 and details["route"] == "provider"
    assert details["recipients"] == [{"address": "tempfail@example.net", "state": "queued",
                                      "reply": "451 4.3.0 Temporary failure, try again"}]
    header_section = shown.stdout[end:]
    assert "\nSubject: Invoice 12" in header_section and "DKIM-Signature:" in header_section


def test_retry_makes_a_deferred_message_attempted_again_now(config_file, make_relay, upstream):
    """A message deferred for an hour is attempted again within seconds of `queue retry`."""
    data, path = config_file(**{"spool.retry": NO_RETRY_SOON})
    relay = make_relay(raw=data)
    queue_id = submit_for_id(relay.port("local"), "tempfail@example.net", "Invoice 13")
    wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts == 1],
               what="the first, deferred attempt")
    assert upstream.rcpt_attempts["tempfail@example.net"] == 1

    retried = relay_cli(path, "retry", queue_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"{queue_id}: will be retried now"
    wait_until(lambda: upstream.rcpt_attempts["tempfail@example.net"] >= 2, timeout=5,
               what="a second attempt")
    wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts == 2],
               what="the second attempt recorded")


def test_deleted_message_is_never_delivered(config_file, relays, upstream):
    """Deleted while the relay is stopped (and due now): the next start delivers the others, not it."""
    data, path = config_file(**{"spool.retry": NO_RETRY_SOON})
    relay = relays(data)
    doomed = submit_for_id(relay.port("local"), "flaky+doomed@example.net", "Doomed")
    kept = submit_for_id(relay.port("local"), "flaky+kept@example.net", "Kept")
    wait_until(lambda: len([s for s in relay.relay.spool.summaries() if s.attempts == 1]) == 2,
               what="both messages deferred once")
    relay.stop()

    for queue_id in (doomed, kept):                  # both due now: flaky@ accepts the retry
        assert relay_cli(path, "retry", queue_id).returncode == 0
    deleted = relay_cli(path, "delete", doomed)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"{doomed}: deleted"
    listed = relay_cli(path, "list").stdout
    assert doomed not in listed and kept in listed and "1 message(s) queued" in listed

    relay = relays(data)
    upstream.wait_for(lambda msgs: msgs, what="the kept message at the provider")
    wait_until(lambda: not relay.relay.spool.summaries(), what="an empty spool")
    assert [m.rcpt_tos for m in upstream.messages] == [["flaky+kept@example.net"]]
    assert upstream.rcpt_attempts["flaky+doomed@example.net"] == 1


def test_unknown_id_exits_1_with_a_clear_message(config_file):
    """show, retry and delete of an ID not in the spool fail with exit 1 naming the ID."""
    _, path = config_file()
    for action in ("show", "retry", "delete"):
        result = relay_cli(path, action, "0NOSUCHID")
        assert result.returncode == 1, (action, result.stdout)
        assert result.stderr.strip() == "relay: no queued message 0NOSUCHID"
        assert result.stdout == ""
    missing = relay_cli(path, "show")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "relay: queue show needs a message ID"


def test_list_pages_through_the_queue(config_file, make_relay, upstream):
    """list shows a page (--limit, 100 by default) in arrival order, says how to get the
    next (--after the last ID), filters by --domain, and refuses an unknown --after."""
    data, path = config_file(**{"spool.retry": NO_RETRY_SOON})
    relay = make_relay(raw=data)
    ids = [submit_for_id(relay.port("local"), f"tempfail+{n}@example.net", f"Invoice {n}")
           for n in range(5)]
    wait_until(lambda: len([s for s in relay.relay.spool.summaries() if s.attempts == 1]) == 5,
               what="five deferred messages")

    def page(*args: str) -> tuple[list[str], str]:
        done = relay_cli(path, "list", *args)
        assert done.returncode == 0, done.stderr
        return [line.split()[0] for line in done.stdout.splitlines()[1:] if line[:1].isalnum()
                and line.split()[0] in ids], done.stdout

    first, out = page("--limit", "2")
    assert first == ids[:2]
    assert "5 message(s) queued" in out and f"relay queue list --after {ids[1]}" in out
    second, _ = page("--limit", "2", "--after", ids[1])
    assert second == ids[2:4]
    last, out = page("--limit", "2", "--after", ids[3])
    assert last == ids[4:] and "the next page" not in out
    assert page("--domain", "acme.fr")[0] == ids
    assert page("--domain", "other.example")[0] == []

    unknown = relay_cli(path, "list", "--after", "NOSUCHID")
    assert unknown.returncode == 1 and "no queued message NOSUCHID" in unknown.stderr
    zero = relay_cli(path, "list", "--limit", "0")
    assert zero.returncode == 2 and "expected a positive number" in zero.stderr

"""`relay feedback ingest` and `relay suppressions`: the operator's side of the suppression list.

`relay feedback ingest -c FILE < report.eml` is a mailbox pipe: it reads one DSN (RFC 3464)
or ARF report (RFC 5965) on standard input, prints how many events of which kinds it held and
how many were new, and applies them to the spool a running relay shares: the relay refuses
the dead address at RCPT TO right after. Standard input that is no report exits 1 with one
line on stderr and changes nothing. `relay suppressions add|remove RECIPIENT --domain D` edit
the list, `list` shows it (optionally of one domain) and `export` writes it as CSV with a
header row; addresses and domains are compared lower-cased.
"""
from __future__ import annotations

import csv
import email.utils
import io
import os
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import base_config

DATA = Path(__file__).resolve().parents[1] / "data"
RFC5322_DATE = re.compile(rb"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")


def relay_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "relay.cli", *args], input=stdin,
                            capture_output=True, timeout=30, env=dict(os.environ))
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def report(path: str) -> bytes:
    """A sample report, as returned today for mail of acme.fr (the samples name example.com
    and 2024: events older than the reputation window are pruned, duplicates with them)."""
    now = email.utils.formatdate(time.time()).encode()
    return RFC5322_DATE.sub(now, (DATA / path).read_bytes().replace(b"example.com", b"acme.fr"))


def rcpt_reply(port: int, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail("billing@acme.fr")[0] == 250
        code, text = client.rcpt(rcpt)
    return code, text.decode()


@pytest.fixture
def setup(tmp_path, upstream, server_cert, dkim_keys, make_relay):
    """A running relay and its configuration file, for the CLI to share its spool."""
    data = base_config(tmp_path, upstream.port, server_cert, dkim_keys)
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(data))
    return make_relay(raw=data), str(path)


def test_ingest_a_dsn_and_an_arf_report(setup):
    relay, config = setup
    port = relay.port("local")
    assert rcpt_reply(port, "bob@example.net")[0] == 250

    dsn = report("rfc3464/postfix_user_unknown_5.1.1.eml")
    result = relay_cli("feedback", "ingest", "-c", config, stdin=dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 event(s) (bounced_hard), 1 new"
    code, text = rcpt_reply(port, "bob@example.net")
    assert (code, text[:5]) == (550, "5.1.1"), text

    again = relay_cli("feedback", "ingest", "-c", config, stdin=dsn)
    assert again.returncode == 0 and again.stdout.strip() == "1 event(s) (bounced_hard), 0 new"

    result = relay_cli("feedback", "ingest", "-c", config, stdin=report("rfc5965/yahoo_abuse.eml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 event(s) (complained), 1 new"
    code, text = rcpt_reply(port, "mallory@example.net")
    assert (code, text[:5]) == (550, "5.7.1"), text

    listing = relay_cli("suppressions", "list", "-c", config)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert sorted(row[:3] for row in rows[:-1]) == [["bob@example.net", "acme.fr", "hard_bounce"],
                                                   ["mallory@example.net", "acme.fr", "complaint"]]
    assert rows[-1] == ["2", "suppression(s)"]


@pytest.mark.parametrize("stdin", [
    b"From: someone@example.net\r\nSubject: hello\r\n\r\nNot a report.\r\n",
    b"",
    (DATA / "rfc3464" / "postfix_user_unknown_5.1.1.eml").read_bytes().replace(
        b"report-type=delivery-status", b"report-type=something-else"),
])
def test_ingest_of_anything_else_exits_1_and_changes_nothing(setup, stdin):
    relay, config = setup
    result = relay_cli("feedback", "ingest", "-c", config, stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "RFC 3464" in result.stderr
    assert relay.call(relay.relay.state.suppressions()) == []


def test_suppressions_add_list_export_remove(setup):
    relay, config = setup
    port = relay.port("local")
    added = relay_cli("suppressions", "add", "Jeanne@Example.NET", "--domain", "ACME.fr", "-c", config)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "jeanne@example.net for acme.fr: suppressed"
    again = relay_cli("suppressions", "add", "jeanne@example.net", "--domain", "acme.fr", "-c", config)
    assert again.stdout.strip() == "jeanne@example.net for acme.fr: was already suppressed"
    assert relay_cli("suppressions", "add", "paul@example.net", "--domain", "other.fr",
                     "-c", config).returncode == 0
    assert rcpt_reply(port, "jeanne@example.net")[0] == 550

    missing = relay_cli("suppressions", "add", "x@example.net", "-c", config)
    assert missing.returncode == 1 and "--domain" in missing.stderr

    exported = relay_cli("suppressions", "export", "-c", config)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows[0] == ["recipient", "domain", "reason", "since"]
    assert sorted(row[:3] for row in rows[1:]) == [["jeanne@example.net", "acme.fr", "manual"],
                                                   ["paul@example.net", "other.fr", "manual"]]
    assert all(row[3] for row in rows[1:])

    one_domain = relay_cli("suppressions", "list", "--domain", "other.fr", "-c", config)
    assert "paul@example.net" in one_domain.stdout and "jeanne" not in one_domain.stdout

    removed = relay_cli("suppressions", "remove", "JEANNE@example.net", "--domain", "acme.fr", "-c", config)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "jeanne@example.net for acme.fr: removed"
    gone = relay_cli("suppressions", "remove", "jeanne@example.net", "--domain", "acme.fr", "-c", config)
    assert gone.stdout.strip() == "jeanne@example.net for acme.fr: was not suppressed"
    assert rcpt_reply(port, "jeanne@example.net")[0] == 250

    rows = list(csv.reader(io.StringIO(relay_cli("suppressions", "export", "-c", config).stdout)))
    assert rows[0] == ["recipient", "domain", "reason", "since"]
    assert [row[:3] for row in rows[1:]] == [["paul@example.net", "other.fr", "manual"]]

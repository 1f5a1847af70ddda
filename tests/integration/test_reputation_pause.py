"""Complaints past the limit pause a domain's bulk mail; the operator's resume releases it.

With `reputation: {min_volume: 10, complaint_rate: {limit: 1%, stop: 50%}, window: 7d}`,
acme.fr delivers 10 transactional messages, then Brevo reports complaints from 2 of their
recipients (20%: above the limit, under the stop). From then on acme.fr's bulk mail is
accepted and held in the queue (the governor's `deferred` event says `paused`) while its
transactional mail still goes. `relay domains resume acme.fr` lifts the pause and the held
bulk mail is released as soon as the delivery process sees the pause lifted. The
operator's resume holds, although the rate is still 20%: a duplicate complaint or a
delivered event changes nothing; only a new complaint pauses the bulk mail again.

Under `min_volume`, complaints still suppress their recipients at once, but nothing is paused.
Above `stop`, all of the domain's mail is paused, transactional included.
"""
from __future__ import annotations

import copy
import http.client
import json
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from relay.outbound.worker import _PAUSES_REFRESH
from tests.conftest import base_config, message, submit, wait_until

TOKEN = "webhook-token-0123456789"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
NEWSLETTER = "List-Id: <news.acme.fr>\r\n"        # one campaign: with 2 recipients it is bulk


def brevo(event: str, email: str) -> dict:
    """A Brevo event for mail of acme.fr (named through `X-Mailin-custom`), dated now."""
    body = copy.deepcopy(json.loads((SAMPLES / "brevo" / "spam.json").read_text()))
    body.update({"event": event, "email": email, "ts_epoch": int(time.time() * 1000),
                 "message-id": f"<{event}.{email}@smtp-relay.mailin.fr>",
                 "X-Mailin-custom": json.dumps({"sender_domain": "acme.fr"})})
    return body


def post(port: int, body: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/webhooks/brevo", body=json.dumps(body).encode(),
                           headers={"Authorization": f"Bearer {TOKEN}",
                                    "Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    assert response.status == 200, answer
    return json.loads(answer)


def relay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay.cli", *args], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ))


def rcpt_code(port: int, rcpt: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail("billing@acme.fr")[0] == 250
        return client.rcpt(rcpt)[0]


class Scenario:
    def __init__(self, relay, config_file: Path, upstream, capfd) -> None:
        self.relay, self.config_file, self.upstream = relay, config_file, upstream
        self.smtp, self.http = relay.port("local"), relay.relay.http_port
        self.capfd, self.err = capfd, []             # the delivery process's stderr, so far

    def paused(self) -> dict:
        return self.relay.call(self.relay.relay.state.paused())

    def delivered_count(self) -> int:
        return self.relay.call(self.relay.relay.state.rates("acme.fr")).delivered

    def deliver_transactional(self, n: int, start: int = 0) -> None:
        """`n` single-recipient invoices (a campaign each: transactional), all delivered."""
        before = len(self.upstream.messages)
        for i in range(start, start + n):
            rcpt = f"client{i}@example.net"
            assert submit(self.smtp, "billing@acme.fr", [rcpt],
                          message(to=rcpt, subject=f"Invoice {i}")) == {}
        self.upstream.wait_for(lambda msgs: len(msgs) == before + n, what=f"{n} invoices delivered")
        wait_until(lambda: not [m for m in self.relay.relay.spool.summaries() if m.attempts == 0
                                and m.next_attempt <= time.time()],
                   what="the invoices to leave the spool")

    def submit_newsletter(self, *rcpts: str) -> None:
        assert submit(self.smtp, "billing@acme.fr", list(rcpts),
                      message(to=", ".join(rcpts), subject="May newsletter", extra=NEWSLETTER)) == {}

    def wait_for_delivery_to_read_pauses(self, expect: str) -> None:
        """The delivery process logs the paused domains whenever they change: wait for it to
        say `expect` ("acme.fr (bulk)", "none")."""
        def said() -> bool:
            self.err.extend(self.capfd.readouterr().err.splitlines())
            said = [json.loads(line).get("msg") for line in self.err if line.startswith("{")]
            return f"paused domains now: {expect}" in said
        wait_until(said, timeout=_PAUSES_REFRESH + 10, what=f"the delivery process to see {expect}")


@pytest.fixture
def scenario(tmp_path, upstream, server_cert, dkim_keys, make_relay, monkeypatch, capfd):
    def make(**reputation) -> Scenario:
        monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", TOKEN)
        data = base_config(tmp_path, upstream.port, server_cert, dkim_keys, **{
            "http": {"address": "127.0.0.1", "port": 0},
            "feedback": {"webhooks": {"brevo": {"token_env": "RELAY_WEBHOOK_TOKEN"}}},
            "limits": {"bulk": {"recipients_threshold": 1, "unsubscribe": "off"}},
            "reputation": {"window": "7d", **reputation},
        })
        path = tmp_path / "relay.yaml"
        path.write_text(yaml.safe_dump(data))
        return Scenario(make_relay(raw=data), path, upstream, capfd)
    return make


def held_events(capfd, seen: list[str], message_id: str) -> list[dict]:
    seen.extend(capfd.readouterr().err.splitlines())
    events = [json.loads(line[line.index("{"):]) for line in seen if "relay.events" in line]
    return [e for e in events if e.get("id") == message_id and e["event"] == "deferred"
            and e.get("by") == "governor"]


def test_complaints_above_the_limit_pause_bulk_until_the_operator_resumes(scenario, upstream, capfd):
    """10 delivered, 2 complaints (20%): bulk held, transactional sent; resume releases the held
    bulk; the resume holds through a duplicate and a delivered event; a new complaint re-pauses."""
    s = scenario(min_volume=10, complaint_rate={"limit": "1%", "stop": "50%"})
    s.deliver_transactional(10)
    wait_until(lambda: s.delivered_count() == 10, what="10 deliveries counted for acme.fr")
    assert s.paused() == {}

    complaints = [brevo("spam", "client0@example.net"), brevo("spam", "client1@example.net")]
    for complaint in complaints:
        assert post(s.http, complaint) == {"events": 1, "new": 1}
    [(scope, reason)] = s.paused().values()
    assert list(s.paused()) == ["acme.fr"] and scope == "bulk"
    assert "above limit" in reason, reason             # as it was when the pause began
    listing = relay_cli("domains", "list", "-c", str(s.config_file))
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if line.startswith("acme.fr ")]
    assert "paused (bulk)" in row and "20.00%" in row, row

    # the bulk mail is accepted and held; the transactional mail still goes
    s.wait_for_delivery_to_read_pauses("acme.fr (bulk)")
    s.submit_newsletter("fan1@example.net", "fan2@example.net")
    [held] = wait_until(lambda: [m for m in s.relay.relay.spool.summaries()
                                 if m.attempts == 0 and m.next_attempt > time.time()],
                        what="the newsletter to be held")
    [event] = wait_until(lambda: held_events(capfd, s.err, held.id), what="the governor's deferred event")
    assert event["reason"] == "paused" and event["domain"] == "acme.fr"
    s.deliver_transactional(1, start=10)
    assert upstream.delivered_to("fan1@example.net") == []
    assert [m.id for m in s.relay.relay.spool.summaries()] == [held.id]

    # the operator resumes: the pause is lifted, the held newsletter leaves
    resumed = relay_cli("domains", "resume", "acme.fr", "-c", str(s.config_file))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("acme.fr: resumed")
    assert s.paused() == {}
    [newsletter] = upstream.wait_for(
        lambda msgs: [m for m in msgs if "fan1@example.net" in m.rcpt_tos],
        timeout=_PAUSES_REFRESH + 15, what="the held newsletter after resume")
    assert sorted(newsletter.rcpt_tos) == ["fan1@example.net", "fan2@example.net"]

    # the resume holds although the rate is still 20%: no re-pause without a new complaint
    assert post(s.http, complaints[1]) == {"events": 1, "new": 0}       # a provider's retry
    assert s.paused() == {}
    assert post(s.http, brevo("delivered", "client5@example.net")) == {"events": 1, "new": 1}
    assert s.paused() == {}, "a delivered event is no complaint: the operator's resume holds"
    s.wait_for_delivery_to_read_pauses("none")
    s.submit_newsletter("fan3@example.net", "fan4@example.net")
    upstream.wait_for(lambda msgs: [m for m in msgs if "fan3@example.net" in m.rcpt_tos],
                      what="the next newsletter, sent at once")

    assert post(s.http, brevo("spam", "client2@example.net")) == {"events": 1, "new": 1}
    assert {d: scope for d, (scope, _) in s.paused().items()} == {"acme.fr": "bulk"}


def test_under_min_volume_complaints_suppress_but_pause_nothing(scenario, upstream):
    """1 delivery, 2 complaints (200%, even above stop): both recipients are suppressed at once,
    no pause; the next newsletter goes straight out."""
    s = scenario(min_volume=10, complaint_rate={"limit": "1%", "stop": "50%"})
    s.deliver_transactional(1)
    wait_until(lambda: s.delivered_count() == 1, what="the delivery counted for acme.fr")
    assert post(s.http, brevo("spam", "client0@example.net")) == {"events": 1, "new": 1}
    assert post(s.http, brevo("spam", "other@example.net")) == {"events": 1, "new": 1}
    assert s.paused() == {}
    assert rcpt_code(s.smtp, "client0@example.net") == 550
    assert rcpt_code(s.smtp, "other@example.net") == 550

    s.submit_newsletter("fan1@example.net", "fan2@example.net")
    upstream.wait_for(lambda msgs: [m for m in msgs if "fan1@example.net" in m.rcpt_tos],
                      what="the newsletter, never held")
    assert s.paused() == {}


def test_above_stop_all_mail_is_paused(scenario, upstream):
    """min_volume 0: 1 delivery, 1 complaint (100% > stop 50%): transactional mail waits too."""
    s = scenario(min_volume=0, complaint_rate={"limit": "1%", "stop": "50%"})
    s.deliver_transactional(1)
    wait_until(lambda: s.delivered_count() == 1, what="the delivery counted for acme.fr")
    assert post(s.http, brevo("spam", "client0@example.net")) == {"events": 1, "new": 1}
    assert {d: scope for d, (scope, _) in s.paused().items()} == {"acme.fr": "all"}

    s.wait_for_delivery_to_read_pauses("acme.fr (all)")
    assert submit(s.smtp, "billing@acme.fr", ["late@example.net"],
                  message(to="late@example.net", subject="Invoice 77")) == {}
    wait_until(lambda: [m for m in s.relay.relay.spool.summaries()
                        if m.attempts == 0 and m.next_attempt > time.time()],
               what="the invoice to be held")
    assert upstream.delivered_to("late@example.net") == []

"""Provider webhooks feed the suppression list, over real sockets.

relay serves `POST /webhooks/<provider>` on its `http` listener for each provider configured
under `feedback.webhooks`. A request without the provider's token (as `Authorization: Bearer`
or as the password of HTTP basic auth) is 401 and changes nothing; a body that is not that
provider's webhook is 400 and changes nothing, even when part of it would have been readable;
a valid body is 200 with `{"events": n, "new": m}`, and by then its events are stored: a hard
bounce puts the recipient on the suppression list of the sender domain the payload names, so
the next RCPT TO that address from that domain is refused with 550 5.1.1 (a complaint: 550
5.7.1). The same event delivered twice is counted once (`"new": 0`). An SNS
SubscriptionConfirmation is answered 200 and its SubscribeURL is logged for the operator,
never fetched. A real-shaped sample of every provider is accepted.
"""
from __future__ import annotations

import base64
import copy
import http.client
import http.server
import json
import smtplib
import threading
import time
from pathlib import Path

import pytest


TOKEN = "webhook-token-0123456789"
PROVIDERS = ("brevo", "mailjet", "ses", "sendgrid", "postmark")
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "webhooks"


def sample(provider: str, name: str):
    return json.loads((SAMPLES / provider / f"{name}.json").read_text())


def brevo(event: str, email: str, **extra) -> dict:
    """A Brevo transactional event sent by acme.fr (named through `X-Mailin-custom`)."""
    body = copy.deepcopy(sample("brevo", "hard_bounce"))
    body.update({"event": event, "email": email, "ts_epoch": int(time.time() * 1000),
                 "message-id": f"<{event}.{email}@smtp-relay.mailin.fr>",
                 "X-Mailin-custom": json.dumps({"sender_domain": "acme.fr"})}, **extra)
    if event != "hard_bounce":
        body.pop("reason", None)
    return body


def post(port: int, provider: str, body, *, auth: str | None = f"Bearer {TOKEN}"):
    """POST a body (JSON-encoded unless bytes); returns (status, parsed JSON or text)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    try:
        connection.request("POST", f"/webhooks/{provider}", body=raw, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(text) if is_json else text


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rcpt_reply(port: int, mail_from: str, rcpt: str) -> tuple[int, str]:
    """The relay's answer to RCPT TO, from a client it trusts by network (user erp)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail(mail_from)[0] == 250
        code, text = client.rcpt(rcpt)
        client.rset()
    return code, text.decode()


@pytest.fixture
def relay(make_relay, monkeypatch):
    monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", TOKEN)
    return make_relay(**{
        "http": {"address": "127.0.0.1", "port": 0},
        "feedback": {"webhooks": {p: {"token_env": "RELAY_WEBHOOK_TOKEN"} for p in PROVIDERS}},
    })


def suppressed(relay) -> list[tuple[str, str, str]]:
    return [(r, d, reason.value) for r, d, reason, _ in relay.call(relay.relay.state.suppressions())]


def test_requests_without_the_token_are_refused(relay):
    """Missing, wrong bearer, wrong basic password, malformed basic: 401 and nothing stored;
    the right token as bearer or as the basic-auth password is accepted."""
    port = relay.relay.http_port
    body = brevo("hard_bounce", "gone@example.net")
    for auth in (None, "Bearer wrong-token", f"Bearer {TOKEN}x", basic("brevo", "wrong-token"),
                 basic(TOKEN, ""), "Basic !!not-base64!!", TOKEN, f"Token {TOKEN}"):
        status, _ = post(port, "brevo", body, auth=auth)
        assert status == 401, auth
    assert suppressed(relay) == []

    assert post(port, "brevo", body, auth=basic("brevo", TOKEN)) == (200, {"events": 1, "new": 1})
    assert post(port, "mailjet", [], auth=f"Bearer {TOKEN}") == (200, {"events": 0, "new": 0})


def test_a_malformed_body_is_400_and_changes_nothing(relay):
    """Not JSON, the wrong shape, or one bad event in a batch: 400, nothing stored."""
    port = relay.relay.http_port
    good = {"event": "bounce", "time": int(time.time()), "MessageID": 1, "email": "gone@example.net",
            "CustomID": json.dumps({"sender_domain": "acme.fr"}), "hard_bounce": True,
            "error_related_to": "recipient", "error": "user unknown"}
    bad = {k: v for k, v in good.items() if k != "email"}
    for provider, body in [
        ("brevo", (SAMPLES / "brevo" / "malformed_not_json.json").read_bytes()),
        ("brevo", sample("brevo", "malformed_missing_email")),
        ("mailjet", sample("mailjet", "malformed_wrong_shape")),
        ("mailjet", [good, bad]),                       # all or nothing: good is not kept
        ("ses", sample("ses", "malformed_message_not_json")),
        ("sendgrid", sample("sendgrid", "malformed_object")),
        ("sendgrid", (SAMPLES / "sendgrid" / "malformed_truncated.json").read_bytes()),
        ("postmark", sample("postmark", "malformed_array")),
        ("postmark", b"\xff\xfe not utf-8"),
    ]:
        status, _ = post(port, provider, body)
        assert status == 400, (provider, body)
    assert suppressed(relay) == []
    assert rcpt_reply(relay.port("local"), "billing@acme.fr", "gone@example.net")[0] == 250

    assert post(port, "mailjet", [good]) == (200, {"events": 1, "new": 1})   # the same, alone
    assert suppressed(relay) == [("gone@example.net", "acme.fr", "hard_bounce")]


def test_a_hard_bounce_and_a_complaint_suppress_the_recipient(relay):
    """Brevo hard_bounce -> RCPT TO from acme.fr is 550 5.1.1; spam -> 550 5.7.1; another
    sender domain (other.fr) may still write to both."""
    port, smtp = relay.relay.http_port, relay.port("local")
    assert post(port, "brevo", brevo("hard_bounce", "gone@example.net")) == (200, {"events": 1, "new": 1})
    assert post(port, "brevo", brevo("spam", "angry@example.net")) == (200, {"events": 1, "new": 1})

    code, text = rcpt_reply(smtp, "billing@acme.fr", "gone@example.net")
    assert (code, text[:5]) == (550, "5.1.1"), text
    code, text = rcpt_reply(smtp, "billing@acme.fr", "Angry@Example.NET")
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert "complained" in text
    assert rcpt_reply(smtp, "billing@acme.fr", "someone@example.net")[0] == 250
    assert sorted(suppressed(relay)) == [("angry@example.net", "acme.fr", "complaint"),
                                         ("gone@example.net", "acme.fr", "hard_bounce")]


def test_duplicate_events_are_counted_once(relay):
    """The same body again, and a batch repeating an event: `new` counts only the first."""
    port = relay.relay.http_port
    body = brevo("hard_bounce", "gone@example.net")
    assert post(port, "brevo", body) == (200, {"events": 1, "new": 1})
    assert post(port, "brevo", body) == (200, {"events": 1, "new": 0})
    assert post(port, "brevo", body, auth=basic("x", TOKEN)) == (200, {"events": 1, "new": 0})

    batch = [dict(event, sender_domain="acme.fr", timestamp=int(time.time()))   # custom arg
             for event in sample("sendgrid", "duplicates")]    # one sg_event_id, twice
    assert post(port, "sendgrid", batch) == (200, {"events": 2, "new": 1})
    assert post(port, "sendgrid", batch) == (200, {"events": 2, "new": 0})
    assert suppressed(relay) == [("gone@example.net", "acme.fr", "hard_bounce")]


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):   # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_sns_subscription_confirmation_is_logged_never_fetched(relay, caplog):
    """200; an SNS SubscribeURL is logged for the operator; a URL elsewhere is not even
    logged; relay requests neither."""
    port = relay.relay.http_port
    confirmation = sample("ses", "subscription_confirmation")
    with caplog.at_level("WARNING", logger="relay.webhooks"):
        status, _ = post(port, "ses", confirmation)
    assert status == 200
    assert confirmation["SubscribeURL"] in caplog.text

    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        forged = dict(confirmation, SubscribeURL=f"http://127.0.0.1:{server.server_port}/confirm")
        caplog.clear()
        status, _ = post(port, "ses", forged)
        assert status == 200
        assert forged["SubscribeURL"] not in caplog.text
        post(port, "ses", confirmation)          # a round trip later, still nothing
        assert _Recorder.requests == []
    finally:
        server.shutdown()
        server.server_close()
    assert suppressed(relay) == []


@pytest.mark.parametrize("provider, name, events", [
    ("brevo", "hard_bounce", 1), ("brevo", "opened", 0),
    ("mailjet", "bounce_hard", 1), ("mailjet", "batch", None),
    ("ses", "bounce_permanent", 2), ("ses", "complaint", 1), ("ses", "raw_bounce", None),
    ("sendgrid", "bounce", 1), ("sendgrid", "batch", None),
    ("postmark", "bounce_hard", 1), ("postmark", "spam_complaint", 1),
])
def test_each_providers_sample_is_accepted(relay, provider, name, events):
    """Real-shaped payloads of all five providers: 200 with their event count; their sender
    domain (acme.example.org / unnamed) is not configured here, so acme.fr suppresses no one."""
    status, answer = post(relay.relay.http_port, provider, sample(provider, name))
    assert status == 200, answer
    if events is not None:
        assert answer["events"] == events
    assert answer["events"] >= answer["new"] >= 0
    assert all(domain != "acme.fr" for _, domain, _ in suppressed(relay))
    assert rcpt_reply(relay.port("local"), "billing@acme.fr", "gone@example.net")[0] == 250


def test_an_unconfigured_path_is_404(make_relay, monkeypatch):
    """Only the configured providers are served."""
    monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", TOKEN)
    relay = make_relay(**{"http": {"address": "127.0.0.1", "port": 0},
                          "feedback": {"webhooks": {"brevo": {"token_env": "RELAY_WEBHOOK_TOKEN"}}}})
    assert post(relay.relay.http_port, "ses", sample("ses", "bounce_permanent"))[0] == 404
    assert post(relay.relay.http_port, "brevo", []) == (200, {"events": 0, "new": 0})

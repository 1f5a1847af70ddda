"""Every reply relay sends is counted in relay_smtp_replies_total under the command it
answers (CONNECT for the greeting, OTHER for a line refused before any command ran, AUTH for
its 334 challenges too), and every refusal once in relay_messages_rejected_total; counting
does not change what the client sees: HELP still lists the commands."""
from __future__ import annotations

import base64
import smtplib

from relay import metrics
from tests.conftest import PASSWORD


def counted(name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """A counter as the listener process counts it (this test process)."""
    return {tuple(labels[n] for n in label_names): value
            for sample, labels, value in metrics.snapshot() if sample == name}


def moved(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_replies_are_counted_by_command_and_code(make_relay):
    relay = make_relay()
    replies_before = counted("relay_smtp_replies_total", "command", "code")
    rejected_before = counted("relay_messages_rejected_total", "reason")
    client = smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10)
    assert client.docmd("FOO")[0] == 500
    client.ehlo("client.example")
    code, text = client.docmd("HELP")
    assert code == 250 and b"MAIL" in text and b"RCPT" in text and b"DATA" in text
    assert client.docmd("MAIL", "FROM:<not an address>")[0] == 553      # aiosmtpd's check
    assert client.docmd("MAIL", "FROM:<billing@acme.fr>")[0] == 250
    assert client.docmd("RCPT", "TO:<user@localhost>")[0] == 553         # relay's own check
    client.quit()

    assert moved(replies_before, counted("relay_smtp_replies_total", "command", "code")) == {
        ("CONNECT", "220"): 1, ("OTHER", "500"): 1, ("EHLO", "250"): 1, ("HELP", "250"): 1,
        ("MAIL", "553"): 1, ("MAIL", "250"): 1, ("RCPT", "553"): 1, ("QUIT", "221"): 1}
    assert moved(rejected_before, counted("relay_messages_rejected_total", "reason")) == {
        ("syntax",): 2}


def test_auth_challenges_and_refusals_are_counted(make_relay, client_tls):
    relay = make_relay()
    replies_before = counted("relay_smtp_replies_total", "command", "code")
    rejected_before = counted("relay_messages_rejected_total", "reason")
    client = smtplib.SMTP_SSL("127.0.0.1", relay.port("submissions"), context=client_tls,
                              timeout=10)
    client.ehlo("client.example")
    assert client.docmd("AUTH", "LOGIN")[0] == 334
    assert client.docmd(b64("billing-app"))[0] == 334
    assert client.docmd(b64("wrong"))[0] == 535
    # RFC 4616 §2: an authorization identity other than the login is refused
    assert client.docmd("AUTH", "PLAIN " + b64(f"erp\0billing-app\0{PASSWORD}"))[0] == 535
    client.quit()

    replies = moved(replies_before, counted("relay_smtp_replies_total", "command", "code"))
    assert replies[("AUTH", "334")] == 2
    assert replies[("AUTH", "535")] == 2
    assert moved(rejected_before, counted("relay_messages_rejected_total", "reason")) == {
        ("auth",): 2}

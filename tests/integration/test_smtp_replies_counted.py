"""Every reply relay sends is counted in relay_smtp_replies_total under the command it
answers (CONNECT for the greeting, OTHER for a line refused before any command ran), and
counting does not change what the client sees: HELP still lists the commands."""
from __future__ import annotations

import smtplib

from relay import metrics


def replies() -> dict[tuple[str, str], float]:
    """relay_smtp_replies_total as the listener process counts it (this test process)."""
    return {(labels["command"], labels["code"]): value
            for name, labels, value in metrics.snapshot() if name == "relay_smtp_replies_total"}


def test_replies_are_counted_by_command_and_code(make_relay):
    relay = make_relay()
    before = replies()
    client = smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10)
    client.ehlo("client.example")
    code, text = client.docmd("HELP")
    assert code == 250 and b"MAIL" in text and b"RCPT" in text and b"DATA" in text
    assert client.docmd("FOO")[0] == 500
    assert client.docmd("MAIL", "FROM:<not an address>")[0] == 553
    assert client.docmd("MAIL", "FROM:<billing@acme.fr>")[0] == 250
    client.quit()

    after = replies()
    counted = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}
    assert counted == {("CONNECT", "220"): 1, ("EHLO", "250"): 1, ("HELP", "250"): 1,
                       ("OTHER", "500"): 1, ("MAIL", "553"): 1, ("MAIL", "250"): 1,
                       ("QUIT", "221"): 1}

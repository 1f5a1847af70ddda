"""The warm-up cap holds mail past the day's step until the next UTC midnight.

With `limits.warmup.schedule: [2]`, acme.fr's first day through relay carries 2 recipients.
Three single-recipient messages are submitted one after the other: the first two reach the
provider; the third is held by the governor. A hold is not an attempt: the message stays in
the spool with no attempt recorded, due again at the next UTC midnight, the provider never
sees it, and the event log says why (`deferred`, by the governor, for "warmup").

The delivery process runs on the real clock, so the hold itself is all this scenario can
observe; tests/unit/governor covers what happens on the following days.
"""
import json
import time

from tests.conftest import message, submit, wait_until

DAY = 86400


def test_mail_past_the_warmup_cap_is_held_until_midnight(make_relay, upstream, capfd):
    """schedule [2]: one@ and two@ are delivered, three@ waits in the spool for midnight UTC."""
    relay = make_relay(**{"limits": {"warmup": {"schedule": [2]}}})
    port = relay.port("local")
    for n, rcpt in enumerate(["one@example.net", "two@example.net"], start=1):
        assert submit(port, "billing@acme.fr", [rcpt], message(to=rcpt, subject=f"Invoice {n}")) == {}
        upstream.wait_for(lambda msgs: len(msgs) == n, what=f"message {n} at the provider")
        wait_until(lambda: not relay.relay.spool.summaries(),
                   what=f"message {n} to leave the spool")

    assert submit(port, "billing@acme.fr", ["three@example.net"],
                  message(to="three@example.net", subject="Invoice 3")) == {}
    [held] = wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.next_attempt > time.time()],
                        what="the third message to be held")
    midnight = (int(time.time()) // DAY + 1) * DAY
    assert held.next_attempt == midnight
    assert held.attempts == 0
    assert held.pending == 1

    err = []

    def deferred_by_governor():
        err.extend(capfd.readouterr().err.splitlines())
        events = [json.loads(line[line.index("{"):]) for line in err if "relay.events" in line]
        return [e for e in events if e.get("id") == held.id and e["event"] == "deferred"]
    [event] = wait_until(deferred_by_governor, what="the governor's deferred event")
    assert event["by"] == "governor"
    assert event["reason"] == "warmup"
    assert event["domain"] == "acme.fr"
    assert event["until"] == midnight

    events = [json.loads(line[line.index("{"):]) for line in err if "relay.events" in line]
    assert not [e for e in events if e.get("id") == held.id and e["event"] == "attempt"]
    assert upstream.delivered_to("three@example.net") == []
    assert upstream.rcpt_attempts["three@example.net"] == 0
    assert [m.rcpt_tos for m in upstream.messages] == [["one@example.net"], ["two@example.net"]]
    assert [s.id for s in relay.relay.spool.summaries()] == [held.id]

"""One message with more recipients than a warm-up day carries leaves over several days.

Warm-up schedule `[10, 20, 40]`, a domain's day 0, one message to 60 recipients (an ERP's
invoice run in Bcc): the provider gets one transaction with exactly 10 recipients, the day's
cap; the other 50 stay queued in the same message, held (not an attempt, held time not
counting toward max_age) until the next UTC midnight, with a `deferred` event saying why.
Before, the whole message passed ("the first message of a day always passes").
The delivery process runs on the real clock; tests/unit/governor covers the next days.
"""
import json
import time

from tests.conftest import message, submit, wait_until

DAY = 86400


def test_sixty_recipients_on_day_0_of_a_10_20_40_warmup(make_relay, upstream, capfd):
    relay = make_relay(**{"limits": {"warmup": {"schedule": [10, 20, 40]}},
                          "server.max_recipients": 100})
    rcpts = [f"client{n:02}@example.net" for n in range(60)]
    assert submit(relay.port("local"), "billing@acme.fr", rcpts,
                  message(to="undisclosed-recipients:;", subject="Invoices of May")) == {}
    [sent] = upstream.wait_for(lambda msgs: msgs, what="the first transaction")
    assert sent.rcpt_tos == rcpts[:10]                       # the day's cap, in order

    [held] = wait_until(lambda: [s for s in relay.relay.spool.summaries()
                                 if s.pending == 50 and s.next_attempt > time.time()],
                        what="the other 50 recipients, held")
    midnight = (int(time.time()) // DAY + 1) * DAY
    assert held.next_attempt == midnight
    assert held.attempts == 1

    err = []

    def deferred_by_governor():
        err.extend(capfd.readouterr().err.splitlines())
        events = [json.loads(line[line.index("{"):]) for line in err if "relay.events" in line]
        return [e for e in events if e.get("id") == held.id and e["event"] == "deferred"
                and e.get("by") == "governor"]
    [event] = wait_until(deferred_by_governor, what="the governor's deferred event")
    assert (event["reason"], event["rcpts"], event["until"]) == ("warmup", 50, midnight)
    assert len(upstream.messages) == 1
    assert sum(upstream.rcpt_attempts.values()) == 10        # nobody else was even tried

"""One bulk message with many recipients is paced recipient by recipient.

`limits.bulk.rate: 60/min`, `unsubscribe: off`, one message to 200 recipients (past the
threshold of 100: bulk): the provider gets one transaction of exactly 60 recipients, and the
other 140 stay queued in the same message, held by bulk pacing until the window frees, a
minute later. Before, the whole message went at once. At a faster rate (`40/s`) the same
message drains completely in transactions of at most 40, each recipient exactly once.
"""
import time

from tests.conftest import message, submit, wait_until

RCPTS = [f"reader{n:03}@example.net" for n in range(200)]


def send(relay):
    return submit(relay.port("local"), "news@acme.fr", RCPTS,
                  message(from_addr="Acme News <news@acme.fr>", to="readers@acme.fr",
                          subject="Our May newsletter"))


def test_200_recipients_at_60_per_minute_leave_60_now(make_relay, upstream):
    relay = make_relay(**{"limits": {"bulk": {"rate": "60/min", "unsubscribe": "off"}},
                          "server.max_recipients": 250})
    before = time.time()
    assert send(relay) == {}
    [sent] = upstream.wait_for(lambda msgs: msgs, what="the first transaction")
    assert sent.rcpt_tos == RCPTS[:60]
    [held] = wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.pending == 140],
                        what="the other 140, held")
    assert before + 59 < held.next_attempt < time.time() + 61       # when the window frees
    assert len(upstream.messages) == 1


def test_200_recipients_at_40_per_second_drain_in_paced_transactions(make_relay, upstream):
    relay = make_relay(**{"limits": {"bulk": {"rate": "40/s", "unsubscribe": "off"}},
                          "server.max_recipients": 250})
    assert send(relay) == {}
    upstream.wait_for(lambda msgs: sum(len(m.rcpt_tos) for m in msgs) >= 200, timeout=30,
                      what="all 200 recipients")
    wait_until(lambda: relay.relay.spool.summaries() == [], what="the spool to empty")
    assert all(len(m.rcpt_tos) <= 40 for m in upstream.messages), \
        [len(m.rcpt_tos) for m in upstream.messages]
    assert sorted(r for m in upstream.messages for r in m.rcpt_tos) == RCPTS   # each once
    assert len(upstream.messages) >= 5

"""A temporary failure (4xx) at the provider defers a recipient; a later attempt delivers it.

Only the recipients still pending are retried: a recipient the provider already accepted is
never sent again, however long another recipient of the same message stays deferred.
"""
from tests.conftest import message, submit, wait_until


def _queued(relay) -> list:
    return relay.relay.spool.summaries()


def test_deferred_recipient_is_delivered_on_a_later_attempt(make_relay, upstream):
    """flaky@ gets 451 on the first attempt and 250 on the retry; the message then leaves the spool."""
    relay = make_relay()
    assert submit(relay.port("local"), "billing@acme.fr", ["flaky@example.net"],
                  message(to="flaky@example.net")) == {}

    [received] = upstream.wait_for(lambda msgs: msgs, what="the retried message at the provider")
    assert received.rcpt_tos == ["flaky@example.net"]
    assert received.mail_from == "billing@acme.fr"
    assert upstream.rcpt_attempts["flaky@example.net"] == 2      # deferred once, then accepted
    wait_until(lambda: not _queued(relay), what="the delivered message to leave the spool")
    assert len(upstream.delivered_to("flaky@example.net")) == 1


def test_deferred_recipient_stays_queued_while_the_other_is_delivered_once(make_relay, upstream):
    """tempfail@ is retried again and again; ok@ of the same message is delivered exactly once."""
    relay = make_relay()
    assert submit(relay.port("local"), "billing@acme.fr",
                  ["tempfail@example.net", "ok@example.net"], message()) == {}

    upstream.wait_for(lambda msgs: msgs, what="ok@ at the provider")
    [queued] = wait_until(lambda: [q for q in _queued(relay) if q.attempts >= 4], timeout=15,
                          what="four recorded attempts for tempfail@")

    [delivered] = upstream.delivered_to("ok@example.net")
    assert delivered.rcpt_tos == ["ok@example.net"]             # tempfail@ was never accepted
    assert upstream.rcpt_attempts["ok@example.net"] == 1        # retries leave ok@ alone
    assert upstream.delivered_to("tempfail@example.net") == []
    assert queued.pending == 1
    states = {r.address: (r.state.value, r.reply[:3])
              for r in relay.relay.spool.get(queued.id).recipients}
    assert states == {"tempfail@example.net": ("queued", "451"),
                      "ok@example.net": ("delivered", "250")}

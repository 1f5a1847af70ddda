"""A `role: feedback` listener reads returned reports and never relays anything.

Bounces (RFC 3464 DSNs) and feedback-loop complaints (RFC 5965 ARF reports) come back by
mail. On a listener with `role: feedback`, any sender (the null sender `<>` included) and
any recipient are accepted without AUTH, and DATA is read as a report, answered `250`: a
DSN's dead address is suppressed for the sender domain of the returned message (RCPT TO it
from that domain is then 550 5.1.1), a policy block (5.7.1) is not, an ARF abuse report
suppresses with "complained" (550 5.7.1), and a message that is no report is refused
(550 5.7.1 naming what the address takes), never accepted and dropped. The fake provider never sees a connection from any of it.
"""
from __future__ import annotations

import email.utils
import re
import smtplib
import time
from pathlib import Path

import pytest

from relay import metrics
from tests.conftest import message, submit, wait_until

DATA = Path(__file__).resolve().parents[1] / "data"
RFC5322_DATE = re.compile(rb"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
LISTENERS = [
    {"name": "submission", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"name": "local", "address": "127.0.0.1", "port": 0, "tls": "none"},
    {"name": "feedback", "address": "127.0.0.1", "port": 0, "tls": "none", "role": "feedback"},
]


def report(path: str) -> bytes:
    """A sample report, as returned today for mail of acme.fr (the samples name example.com
    and 2024: events older than the reputation window are pruned, duplicates with them)."""
    now = email.utils.formatdate(time.time()).encode()
    return RFC5322_DATE.sub(now, (DATA / path).read_bytes().replace(b"example.com", b"acme.fr"))


def send_report(port: int, data: bytes, mail_from: str = "",
                rcpt: str = "bounces@relay.test") -> tuple[int, str]:
    """One transaction, no AUTH and no TLS; returns the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mx.example.net")
        assert client.mail(mail_from)[0] == 250
        code, _ = client.rcpt(rcpt)
        assert code == 250, (rcpt, code)
        code, text = client.data(data)
    return code, text.decode()


def rcpt_reply(port: int, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("app.test")
        assert client.mail("billing@acme.fr")[0] == 250
        code, text = client.rcpt(rcpt)
    return code, text.decode()


# The messages the sample reports return (their Message-IDs, as `report` rewrites them):
# reports count only for mail relay sent.
SENT = ["<newsletter-2024-11.bob@acme.fr>", "<deals-w47.mallory@acme.fr>", "<digest-1121@acme.fr>"]


@pytest.fixture
def relay(make_relay, upstream):
    running = make_relay(**{"server.listeners": LISTENERS})
    for message_id in SENT:
        assert submit(running.port("local"), "billing@acme.fr", ["reader@example.net"],
                      message(extra=f"Message-ID: {message_id}\r\n")) == {}
    upstream.wait_for(lambda msgs: len(msgs) == len(SENT), what="the returned messages, sent")
    # their outcomes are written after the provider's 250: tests read an empty spool
    wait_until(lambda: running.relay.spool.summaries() == [], what="the sent messages, recorded")
    return running


def nothing_relayed(upstream) -> bool:
    """The provider saw only the messages the fixture sent: no report was relayed."""
    return len(upstream.messages) == len(SENT) and set(upstream.rcpt_attempts) == {"reader@example.net"}


def test_a_forged_report_about_mail_relay_never_sent_changes_nothing(relay):
    """A DSN naming a Message-ID relay never sent is accepted (250) and ignored."""
    forged = report("rfc3464/postfix_user_unknown_5.1.1.eml").replace(
        b"newsletter-2024-11.bob@acme.fr", b"forged-1@acme.fr")
    code, text = send_report(relay.port("feedback"), forged)
    assert code == 250 and "0 new" in text
    assert suppressed(relay) == []


def suppressed(relay) -> list[tuple[str, str, str]]:
    return sorted((r, d, reason.value) for r, d, reason, _ in relay.call(relay.relay.state.suppressions()))


def test_the_null_sender_and_any_recipient_are_accepted_without_auth(relay):
    """MAIL FROM:<> and RCPT TO any local mailbox (or any address at all) are 250."""
    port = relay.port("feedback")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("mx.example.net")
        assert client.mail("")[0] == 250
        for rcpt in ("bounces@relay.test", "fbl@acme.fr", "postmaster@elsewhere.example"):
            assert client.rcpt(rcpt)[0] == 250, rcpt
        client.rset()
        assert client.mail("MAILER-DAEMON@mx.example.net")[0] == 250


def test_a_dsn_suppresses_the_dead_address(relay, upstream):
    """Postfix's 5.1.1 DSN for mail of acme.fr: 250, bob@example.net is a hard bounce."""
    dsn = report("rfc3464/postfix_user_unknown_5.1.1.eml")
    code, text = send_report(relay.port("feedback"), dsn)
    assert code == 250, text
    assert "1 event(s), 1 new" in text
    assert suppressed(relay) == [("bob@example.net", "acme.fr", "hard_bounce")]
    code, text = rcpt_reply(relay.port("local"), "bob@example.net")
    assert (code, text[:5]) == (550, "5.1.1"), text

    code, text = send_report(relay.port("feedback"), dsn)
    assert code == 250 and "1 event(s), 0 new" in text          # the same report again
    assert nothing_relayed(upstream)


def test_a_policy_block_dsn_does_not_suppress(relay, upstream):
    """Spamhaus refused the mail (5.7.1): the address is fine, it stays deliverable."""
    code, text = send_report(relay.port("feedback"), report("rfc3464/spamhaus_block_5.7.1.eml"))
    assert code == 250, text
    assert suppressed(relay) == []
    assert rcpt_reply(relay.port("local"), "erin@example.net")[0] == 250
    assert nothing_relayed(upstream)


def test_an_arf_report_suppresses_with_complaint(relay, upstream):
    """Yahoo's abuse report about mail of acme.fr: mallory@example.net complained."""
    code, text = send_report(relay.port("feedback"), report("rfc5965/yahoo_abuse.eml"),
                             mail_from="feedback@arf.mail.example.net", rcpt="fbl@acme.fr")
    assert code == 250, text
    assert suppressed(relay) == [("mallory@example.net", "acme.fr", "complaint")]
    code, text = rcpt_reply(relay.port("local"), "mallory@example.net")
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert "complained" in text

    code, text = send_report(relay.port("feedback"), report("rfc5965/not_spam.eml"))
    assert code == 250, text                                     # not-spam: nothing to do
    assert suppressed(relay) == [("mallory@example.net", "acme.fr", "complaint")]
    assert nothing_relayed(upstream)


def test_a_plain_message_is_refused_naming_what_the_address_takes(relay, upstream):
    """Not a report (an out-of-office, a person writing to bounces@): 550 5.7.1 naming what a
    feedback address takes, so its sender learns it was not read (never 250 and dropped);
    counted as a `not_a_report` refusal; nothing relayed, even when it is addressed to a
    mailbox acme.fr routes to the provider."""
    refused = metrics.MESSAGES_REJECTED.labels("not_a_report")
    before = refused._value.get()
    plain = (b"From: Someone <someone@example.net>\r\nTo: bounces@relay.test, client@example.net\r\n"
             b"Subject: Out of office\r\n\r\nI am away until Monday.\r\n")
    code, text = send_report(relay.port("feedback"), plain, mail_from="someone@example.net",
                             rcpt="client@example.net")
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert "RFC 3464" in text and "RFC 5965" in text
    assert refused._value.get() == before + 1
    assert suppressed(relay) == []
    assert relay.relay.spool.summaries() == []
    assert nothing_relayed(upstream)

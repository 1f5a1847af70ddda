"""A campaign becomes bulk once it passes `recipients_threshold` recipients within the
window, across several transactions; with `unsubscribe: require` its bulk messages must carry
RFC 8058 headers, and bulk mail is queued behind transactional mail."""
from __future__ import annotations

import smtplib
import sqlite3

import pytest

from tests.conftest import message, submit, wait_until

UNSUB = ("List-Unsubscribe: <https://acme.fr/u/42>\r\n"
         "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")


def streams(relay) -> list[int]:
    with sqlite3.connect(relay.config.spool.path / "relay.sqlite3") as conn:
        return [s for (s,) in conn.execute("SELECT stream FROM messages ORDER BY created")]


def test_campaign_crossing_the_threshold_needs_unsubscribe_headers(make_relay, upstream):
    """3 recipients are fine; the 4th of the same campaign (From + Subject) makes it bulk:
    without List-Unsubscribe it is refused (550 5.7.1 saying what to add), with it accepted."""
    relay = make_relay(**{"limits": {"bulk": {"recipients_threshold": 3, "window": "1h",
                                              "unsubscribe": "require"}},
                          "routes.provider.port": 9})     # nothing listens: mail stays queued
    port = relay.port("local")
    news = message(subject="November newsletter")
    assert submit(port, "billing@acme.fr", ["a@example.net", "b@example.net"], news) == {}
    assert submit(port, "billing@acme.fr", ["c@example.net"], news) == {}
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(port, "billing@acme.fr", ["d@example.net"], news)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 Mass mailing")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in refused.value.smtp_error

    with_header = message(subject="November newsletter", extra=UNSUB)
    assert submit(port, "billing@acme.fr", ["d@example.net"], with_header) == {}
    other = message(subject="Invoice 7")                   # another campaign: transactional
    assert submit(port, "billing@acme.fr", ["e@example.net"], other) == {}
    wait_until(lambda: len(streams(relay)) == 4, what="four queued messages")
    assert streams(relay) == [0, 0, 1, 0]


def test_campaign_named_by_list_id_counts_across_subjects(make_relay):
    """Messages with one List-Id are one campaign whatever their subjects."""
    relay = make_relay(**{"limits": {"bulk": {"recipients_threshold": 2, "unsubscribe": "off"}},
                          "routes.provider.port": 9})
    port = relay.port("local")
    for i, rcpt in enumerate(["a@example.net", "b@example.net", "c@example.net"]):
        extra = "List-Id: Acme news <news.acme.fr>\r\n"
        assert submit(port, "billing@acme.fr", [rcpt], message(subject=f"Issue {i}", extra=extra)) == {}
    wait_until(lambda: len(streams(relay)) == 3, what="three queued messages")
    assert streams(relay) == [0, 0, 1]

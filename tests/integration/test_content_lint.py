"""The deliverability lint at acceptance, over real SMTP sessions (`content.mode`):

- `warn` (the default) never refuses, and the 250 does not wait for the lint: once its
  report is in, the findings count in relay_content_findings_total and the `queued` event
  carries the score and the rules;
- `refuse_bulk` refuses bulk mail over `content.max_score` with 550 5.7.1 naming the top
  three findings, and still accepts transactional mail however it scores;
- `off` looks at nothing.
"""
from __future__ import annotations

import logging
import os
import signal
import smtplib
from pathlib import Path

import pytest

from relay import metrics
from tests.conftest import submit, wait_until

CORPUS = Path(__file__).parents[1] / "data" / "lint"
RCPTS = ["a@example.net", "b@example.net", "c@example.net"]


def spam() -> bytes:
    """The corpus's French promo, sent as acme.fr (the test relay's domain)."""
    data = (CORPUS / "fr-promo-spam.eml").read_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    head = b"\r\n".join(line for line in head.split(b"\r\n")
                        if not line.lower().startswith((b"from:", b"to:")))
    return b"From: Acme <billing@acme.fr>\r\nTo: client@example.net\r\n" + head + b"\r\n\r\n" + body


def found(rule: str) -> float:
    return metrics.REGISTRY.get_sample_value("relay_content_findings_total", {"rule": rule}) or 0


def test_warn_counts_and_logs_the_findings_and_accepts(make_relay, caplog):
    caplog.set_level(logging.INFO, logger="relay.events")
    relay = make_relay(**{"routes.provider.port": 9})
    before = found("active_content")
    assert submit(relay.port("local"), "billing@acme.fr", RCPTS[:1], spam()) == {}
    wait_until(lambda: found("active_content") == before + 1, what="the findings counted")
    wait_until(lambda: "queued" in caplog.text and "lint_score=" in caplog.text,
               what="the queued event")
    queued = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("queued"))
    assert "lint_score=" in queued and "active_content" in queued and "spam_phrases" in queued


def test_warn_answers_without_waiting_for_the_lint(make_relay, caplog):
    """The lint process stopped (SIGSTOP): the 250 still comes, and the `queued` event
    waits for the report, which comes with the findings once the lint runs again."""
    caplog.set_level(logging.INFO, logger="relay.events")
    relay = make_relay(**{"routes.provider.port": 9})
    child = relay.relay.lint._proc.pid
    os.kill(child, signal.SIGSTOP)
    try:
        assert submit(relay.port("local"), "billing@acme.fr", RCPTS[:1], spam()) == {}
        assert not any(r.getMessage().startswith("queued") for r in caplog.records)
    finally:
        os.kill(child, signal.SIGCONT)
    wait_until(lambda: any(r.getMessage().startswith("queued") for r in caplog.records),
               what="the queued event")
    queued = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("queued"))
    assert "active_content" in queued and "spam_phrases" in queued


def test_a_lint_behind_by_max_linting_messages_makes_the_next_one_wait(make_relay, caplog):
    """The lint's backlog is bounded: with `max_linting` messages waiting for their reports
    (the lint process stopped), the next DATA waits for room, and gets its 250 once the lint
    answers again; every message's `queued` event comes with its findings."""
    import threading

    caplog.set_level(logging.INFO)
    relay = make_relay(**{"routes.provider.port": 9})
    relay.relay.acceptance.max_linting = 1
    child = relay.relay.lint._proc.pid
    os.kill(child, signal.SIGSTOP)
    answers = []
    try:
        assert submit(relay.port("local"), "billing@acme.fr", RCPTS[:1], spam()) == {}
        waiting = threading.Thread(target=lambda: answers.append(
            submit(relay.port("local"), "billing@acme.fr", RCPTS[1:2], spam())))
        waiting.start()
        wait_until(lambda: "the lint has not answered for 1 message(s)" in caplog.text,
                   what="the second message waiting for the lint")
        assert waiting.is_alive() and not answers
    finally:
        os.kill(child, signal.SIGCONT)
    waiting.join(timeout=30)
    assert answers == [{}]
    wait_until(lambda: sum(r.getMessage().startswith("queued") and "lint_score=" in r.getMessage()
                           for r in caplog.records) == 2, what="both queued events")


def test_refuse_bulk_refuses_bulk_mail_over_max_score_naming_the_top_findings(make_relay):
    relay = make_relay(**{"content": {"mode": "refuse_bulk", "max_score": 10},
                          "limits": {"bulk": {"recipients_threshold": 2, "unsubscribe": "off"}},
                          "routes.provider.port": 9})
    port = relay.port("local")
    assert submit(port, "billing@acme.fr", RCPTS[:2], spam()) == {}      # 2: transactional
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(port, "billing@acme.fr", RCPTS[2:], spam())                # the 3rd: bulk
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 Bulk mail refused for its content (score ")
    assert "spam_phrases 6, active_content 4, bulk_no_unsubscribe_link 4" in text
    assert "see relay lint" in text


def test_off_looks_at_nothing(make_relay):
    relay = make_relay(**{"content": {"mode": "off"}, "routes.provider.port": 9})
    before = found("active_content")
    assert submit(relay.port("local"), "billing@acme.fr", RCPTS[:1], spam()) == {}
    assert found("active_content") == before


def test_a_reload_turns_the_lint_on_and_off(make_relay, tmp_path, upstream, server_cert,
                                            dkim_keys):
    """With `content.mode: off` no lint process runs; a reload to `warn` starts it, and one
    back to `off` stops it."""
    import yaml

    from relay import config as config_module
    from tests.conftest import base_config

    relay = make_relay(**{"content": {"mode": "off"}, "routes.provider.port": 9})
    assert relay.relay.lint._proc is None

    def reload_to(mode: str) -> None:
        data = base_config(tmp_path, upstream.port, server_cert, dkim_keys,
                           **{"content": {"mode": mode}, "routes.provider.port": 9})
        relay.relay.reread = lambda: config_module.parse(yaml.safe_dump(data), tmp_path)
        assert relay.call(relay.relay.reload())

    reload_to("warn")
    before = found("active_content")
    assert submit(relay.port("local"), "billing@acme.fr", RCPTS[:1], spam()) == {}
    wait_until(lambda: found("active_content") == before + 1, what="the findings counted")
    reload_to("off")
    assert relay.relay.lint._proc.returncode is not None

"""relay.errors: errors carry their reply; one edge turns any exception into a reply."""
from __future__ import annotations

import logging

import pytest

from relay import replies
from relay.errors import ConfigError, PolicyError, RelayError, TemporaryError, reply_for


def test_policy_error_needs_a_5xx_reply():
    """A policy decision is permanent by definition; a 4xx reply is a programming error."""
    with pytest.raises(ValueError, match="5xx"):
        PolicyError(replies.R451_INTERNAL)
    error = PolicyError(replies.R550_NO_FROM, "no From in message")
    assert error.permanent and error.reply is replies.R550_NO_FROM
    assert error.detail == "no From in message"


def test_temporary_error_needs_a_4xx_reply():
    """Our own failures are temporary; a 5xx reply is a programming error."""
    with pytest.raises(ValueError, match="4xx"):
        TemporaryError(replies.R550_NO_FROM)
    with pytest.raises(ValueError, match="4xx"):
        TemporaryError(replies.R250_OK)
    error = TemporaryError(replies.R451_SPOOL_FAILED)
    assert not error.permanent
    assert str(error) == replies.R451_SPOOL_FAILED.text


def test_reply_for_a_relay_error_is_its_reply():
    """A RelayError reaches the client as exactly the reply it carries."""
    assert reply_for(PolicyError(replies.R550_MANY_FROM), "Q1") is replies.R550_MANY_FROM
    assert reply_for(RelayError(replies.R421_SHUTTING_DOWN), "Q1") is replies.R421_SHUTTING_DOWN


def test_reply_for_an_unknown_error_is_451_with_the_ref_and_no_exception_text(caplog):
    """Anything unexpected becomes 451 4.3.0 naming the ref; its text goes to the log only."""
    secret = "disk /var/lib/relay full; password=hunter2"
    with caplog.at_level(logging.ERROR, logger="relay"):
        reply = reply_for(OSError(secret), "01HQZ7ABC")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert "01HQZ7ABC" in reply.text
    assert secret not in str(reply) and "OSError" not in str(reply)
    assert "01HQZ7ABC" in caplog.text
    assert any(r.exc_info and r.exc_info[1].args == (secret,) for r in caplog.records)


def test_config_error_holds_one_line_per_problem():
    """ConfigError keeps its lines and prints them one per line."""
    error = ConfigError(["a: unknown key", "b.c: required key is missing"])
    assert error.errors == ["a: unknown key", "b.c: required key is missing"]
    assert str(error) == "a: unknown key\nb.c: required key is missing"

"""relay.replies: typed SMTP replies whose basic and enhanced codes always agree."""
from __future__ import annotations

import dataclasses

import pytest

from relay import replies
from relay.replies import Reply


@pytest.mark.parametrize(("code", "enhanced"), [
    (550, "4.7.1"), (451, "5.3.0"), (250, "5.0.0"), (421, "2.0.0"),
])
def test_class_mismatch_is_refused(code, enhanced):
    """A reply whose basic code class differs from its enhanced code class is a bug."""
    with pytest.raises(ValueError, match=f"{code} does not match enhanced code {enhanced}"):
        Reply(code, enhanced, "text")


@pytest.mark.parametrize("code", [199, 600, 0, 99])
def test_non_smtp_code_is_refused(code):
    """Only 2xx to 5xx are SMTP replies."""
    with pytest.raises(ValueError, match="not an SMTP reply code"):
        Reply(code, "", "text")


def test_str_is_the_wire_form():
    """str() gives "code enhanced text", or "code text" without an enhanced code."""
    assert str(Reply(550, "5.7.1", "No")) == "550 5.7.1 No"
    assert str(Reply(354, "", "End data with <CR><LF>.<CR><LF>")) == "354 End data with <CR><LF>.<CR><LF>"


def test_format_fills_placeholders_and_keeps_codes():
    """format() returns a new reply with the text filled in; the constant is unchanged."""
    reply = replies.R550_SENDER_REFUSED.format(address="x@y.fr")
    assert (reply.code, reply.enhanced) == (550, "5.7.1")
    assert str(reply) == "550 5.7.1 You may not send as <x@y.fr>"
    assert "{address}" in replies.R550_SENDER_REFUSED.text


def test_permanent_and_temporary():
    """5xx is permanent, 4xx temporary, 2xx neither."""
    assert replies.R550_NO_FROM.permanent and not replies.R550_NO_FROM.temporary
    assert replies.R451_INTERNAL.temporary and not replies.R451_INTERNAL.permanent
    assert not replies.R250_OK.permanent and not replies.R250_OK.temporary


def test_replies_are_immutable():
    """A named constant cannot be altered by a caller."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        replies.R250_OK.code = 550  # type: ignore[misc]


def test_every_named_reply_is_well_formed():
    """Every R<code>_* constant is a Reply whose name starts with its code, with an enhanced
    code except for intermediate 3xx replies (RFC 2034 §4 covers 2xx, 4xx and 5xx)."""
    named = {n: v for n, v in vars(replies).items() if n.startswith("R") and n[1:4].isdigit()}
    assert len(named) > 20
    for name, reply in named.items():
        assert isinstance(reply, Reply), name
        assert name[1:4] == str(reply.code), name
        assert reply.enhanced or reply.code // 100 == 3, name

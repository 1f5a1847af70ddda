"""relay.checks.admission: connection limits per address and in total."""
from __future__ import annotations

import pytest

from relay import replies
from relay.checks.admission import Admission
from relay.errors import TemporaryError


def refused(admission: Admission, ip: str) -> bool:
    try:
        admission.open(ip)
    except TemporaryError as error:
        assert error.reply == replies.R421_TOO_MANY_CONNECTIONS
        return True
    return False


def test_per_ip_limit():
    """One address gets at most max_per_ip sessions; other addresses are not affected."""
    admission = Admission(max_total=100, max_per_ip=2)
    assert not refused(admission, "10.0.0.1")
    assert not refused(admission, "10.0.0.1")
    assert refused(admission, "10.0.0.1")
    assert not refused(admission, "10.0.0.2")
    assert admission.open_sessions == 3


def test_global_limit():
    """At most max_total sessions are open, whatever their addresses."""
    admission = Admission(max_total=3, max_per_ip=10)
    for ip in ("10.0.0.1", "10.0.0.2", "2001:db8::1"):
        admission.open(ip)
    assert refused(admission, "10.0.0.4")
    assert admission.open_sessions == 3


def test_refusal_is_a_temporary_421():
    """Too many connections is our limit, not a verdict: 421 4.7.0."""
    admission = Admission(max_total=1, max_per_ip=1)
    admission.open("10.0.0.1")
    with pytest.raises(TemporaryError) as info:
        admission.open("10.0.0.1")
    assert str(info.value.reply).startswith("421 4.7.0 ")


def test_close_releases_both_limits():
    """Closing a session frees its slot for the address and in the total."""
    admission = Admission(max_total=2, max_per_ip=1)
    admission.open("10.0.0.1")
    admission.open("10.0.0.2")
    assert refused(admission, "10.0.0.3")
    assert refused(admission, "10.0.0.1")
    admission.close("10.0.0.1")
    assert admission.open_sessions == 1
    assert not refused(admission, "10.0.0.1")
    admission.close("10.0.0.1")
    admission.close("10.0.0.2")
    assert admission.open_sessions == 0
    assert not refused(admission, "10.0.0.3")


def test_refused_open_holds_no_slot():
    """A refused connection does not count against later ones."""
    admission = Admission(max_total=10, max_per_ip=1)
    admission.open("10.0.0.1")
    for _ in range(5):
        assert refused(admission, "10.0.0.1")
    admission.close("10.0.0.1")
    assert admission.open_sessions == 0
    assert not refused(admission, "10.0.0.1")

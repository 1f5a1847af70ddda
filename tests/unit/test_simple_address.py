"""The listener's fast path for `<local@domain>` reads an address exactly as the email
package's parser does, or leaves it to the parser: checked against the parser on generated
arguments (dot-atoms, quoted strings, brackets, comments, spaces, non-ASCII)."""
from __future__ import annotations

from email._header_value_parser import get_angle_addr
from email.errors import HeaderParseError

from hypothesis import given, settings, strategies as st

from relay.inbound.server import RelaySMTP, simple_address

PIECES = st.sampled_from(["a", "b.c", "x-y", "Z9", ".", "..", "@", "<", ">", " ", "\t", "(",
                          ")", '"', "[", "]", "é", "+tag", "1.2.3.4", ":", ",", "SIZE=10",
                          "BODY=8BITMIME", "-", "_", "=", "\\"])


@settings(max_examples=3000, derandomize=True)
@given(st.lists(PIECES, max_size=10).map("".join))
def test_the_fast_path_agrees_with_the_parser(text):
    for arg in (text, f"<{text}", f"<{text}>", f"<a@{text}", f"<{text}@b.c> SIZE=1"):
        fast = simple_address(arg)
        if fast is None:
            continue
        try:
            token, rest = get_angle_addr(arg)
        except HeaderParseError:
            raise AssertionError(f"{arg!r}: the parser refuses what the fast path took")
        assert fast == (token.addr_spec, rest), arg


def test_common_addresses_take_the_fast_path():
    assert simple_address("<billing@acme.fr>") == ("billing@acme.fr", "")
    assert simple_address("<first.last+tag@mail.example.com> SIZE=1024 BODY=8BITMIME") == (
        "first.last+tag@mail.example.com", "SIZE=1024 BODY=8BITMIME")
    assert simple_address("<a@b.c> (comment) SIZE=1") is None
    assert simple_address('<"quoted"@b.c>') is None
    assert simple_address("<jos\u00e9@b.c>") is None


@settings(max_examples=3000, derandomize=True)
@given(st.lists(PIECES, max_size=10).map("".join))
def test_any_argument_reads_as_an_address_or_as_malformed_never_an_error(text):
    """RelaySMTP._getaddr on whatever a client sends after `MAIL FROM:`, `RCPT TO:` or `VRFY`:
    an address and the rest, or (None, None), which aiosmtpd answers 553 5.1.3 (or 502 for
    VRFY). The email package's parser raises IndexError on a lone "<" and AttributeError or
    UnboundLocalError on some others: never an internal error."""
    for arg in (text, f"<{text}", f"<{text}>", "<", "x@[", "é@[ "):
        address, rest = RelaySMTP._getaddr(None, arg)
        assert (address is None) == (rest is None), arg
        assert address is None or isinstance(address, str) and isinstance(rest, str), arg

"""The listener's fast path for `<local@domain>` reads an address exactly as the email
package's parser does, or leaves it to the parser: checked against the parser on generated
arguments (dot-atoms, quoted strings, brackets, comments, spaces, non-ASCII)."""
from __future__ import annotations

from email._header_value_parser import get_angle_addr
from email.errors import HeaderParseError

from hypothesis import given, settings, strategies as st

from relay.inbound.server import simple_address

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

"""relay.lint.message: a one-part message is read without the `email` parser; what it reads
must be what the parser would."""
from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from relay.lint import message as m

CORPUS = Path(__file__).parents[2] / "data" / "lint"

ONE_PART = [
    b"From: =?utf-8?q?Atelier_Dupuis?= <Contact@Atelier.fr>\r\nReply-To: noreply@atelier.fr\r\n"
    b"Subject: =?utf-8?b?w4l0w6kgw6AgcHJpeCBjYXNzw6lz?=\r\n  suite\r\nDate: x\r\n"
    b"Content-Type: text/plain;\r\n charset=\"iso-8859-1\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nPrix cass=E9s =\r\nce soir\r\n",
    b"From: a@b.fr\r\nSubject: html\r\nMessage-ID: <1@b.fr>\r\nList-Unsubscribe: <x>\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"PHA+w4l0w6k8L3A+PGltZyBzcmM9eD4=\r\n",
    b"From: a@b.fr\r\nSubject: bad charset\r\nContent-Type: text/plain; charset=bogus\r\n\r\n\xe9t\xe9\r\n",
    b"From: a@b.fr\r\nSubject: none\r\n\r\nno content type at all\r\n",
]


@pytest.mark.parametrize("data", ONE_PART + [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))],
                         ids=lambda d: d[:40] if isinstance(d, bytes) else None)
def test_the_one_part_reader_reads_what_the_parser_reads(data):
    fast = m._single_part(data)
    slow = m._parsed(email.message_from_bytes(data, policy=email.policy.compat32))
    if fast is not None:
        assert fast == slow


def test_the_one_part_reader_takes_the_simple_cases_and_leaves_the_rest():
    assert all(m._single_part(data) is not None for data in ONE_PART)
    multipart = (CORPUS / "fr-facture.eml").read_bytes()
    assert m._single_part(multipart) is None
    attached = (b"From: a@b.fr\r\nContent-Type: text/plain\r\n"
                b"Content-Disposition: attachment; filename=notes.txt\r\n\r\nx\r\n")
    assert m._single_part(attached) is None
    assert m._single_part(b"From a@b.fr Mon\r\nSubject: x\r\n\r\nbody") is None   # not a field


_ADDRESS_PIECES = ["a", "B", "z9", ".", "..", "-", "+", "%", "_", "'", " ", "  ", "@", "<", ">",
                   '"', "(", ")", ",", ";", ":", "[", "]", "\\", "é", "example", "fr", "Name"]


_part = st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=5).map("".join)
_word = st.lists(st.sampled_from(["a", "B", "z9", ".", "-", "+", "%", "_", "'", '"', ",", " ",
                                  "(", ")", ":", ";"]), min_size=1, max_size=5).map("".join)
_addresses = st.one_of(
    st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=14).map("".join),
    st.tuples(_word, _word, _word).map(lambda t: f"{t[0]} <{t[1]}@{t[2]}>"),   # name <addr>
    st.tuples(_word, _word).map(lambda t: f"{t[0]}@{t[1]}"),                    # a bare address
    st.tuples(_part, _word, _word, _part).map(lambda t: f"{t[0]}<{t[1]}@{t[2]}>{t[3]}"))


@given(_addresses)
@settings(max_examples=1000, derandomize=True, database=None)
def test_the_plain_address_shortcut_gives_what_parseaddr_gives(value):
    """`_address`'s regex shortcut answers as `email.utils.parseaddr` does, on whatever it
    takes; what it does not take goes to parseaddr."""
    import email.utils
    assert m._address(value) == email.utils.parseaddr(m._decoded(value))[1].lower()


@pytest.mark.parametrize("value", ["Bench Sender <bench@bench.example>", "bench@Bench.example",
                                   "<a.b+c@x.fr>", "Jean-Luc O'Neil <jl@x.fr>"])
def test_common_addresses_take_the_shortcut(value):
    assert m._PLAIN_ADDRESS.fullmatch(value) is not None


@pytest.mark.parametrize("parts", ["one", "multipart"])
def test_each_text_part_is_read_up_to_text_scanned_characters(parts):
    """As SpamAssassin's body_part_scan_size: the rules read the first TEXT_SCANNED
    characters of a text part (a phrase within them is found, one past them is not), of a
    one-part message and of a part of a multipart one alike; the HTML's visible text too."""
    from relay.lint import Linter

    filler = ("word " * (m.TEXT_SCANNED // 5))[:m.TEXT_SCANNED - 40]
    text = f"{filler} offre exceptionnelle {'x' * 60} gagnant"
    html = f"<html><body><p>{filler} offre exceptionnelle {'x' * 60} gagnant</p></body></html>"
    if parts == "one":
        data = ("From: a@acme.fr\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                + text + "\r\n").encode()
    else:
        data = ("From: a@acme.fr\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/alternative; boundary=b\r\n\r\n"
                "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
                "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b--\r\n").encode()
    extracted = m.extract(data)
    assert len(extracted.text) == m.TEXT_SCANNED
    assert all(len(h.text) <= m.TEXT_SCANNED for h in extracted.html)
    [phrases] = [f.evidence for f in Linter(("fr",)).check(data).findings if f.rule == "spam_phrases"]
    assert "offre exceptionnelle" in phrases and "gagnant" not in phrases

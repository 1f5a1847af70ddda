"""relay.lint.message: a one-part message is read without the `email` parser; what it reads
must be what the parser would."""
from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

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

"""relay.lint's rules on small messages: what each finds, and what it must not."""
from __future__ import annotations

import pytest

from relay.lint import Linter

LINTER = Linter()


def mail(body: str, subject: str = "Votre rendez-vous", sender: str = "contact@atelier.fr",
         content_type: str = "text/plain", extra: str = "") -> bytes:
    return (f"From: Atelier <{sender}>\r\nTo: client@example.net\r\nSubject: {subject}\r\n"
            f"Date: Thu, 3 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@atelier.fr>\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: {content_type}; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()


def rules(data: bytes, bulk: bool = False) -> set[str]:
    return {f.rule for f in LINTER.check(data, bulk).findings}


FOOTER = "Atelier Dupuis, 12 rue des Lilas, 75011 Paris"


@pytest.mark.parametrize("body", [
    f"Les nouveautés du mois.\r\nPour vous désinscrire : https://atelier.fr/d/123\r\n{FOOTER}",
    f"News of the month.\r\nTo unsubscribe:\r\nhttps://atelier.fr/u/123\r\n{FOOTER}",
    f"News.\r\nManage your preferences: https://atelier.fr/p/1\r\n{FOOTER}",
])
def test_a_text_unsubscribe_link_is_seen(body):
    assert "bulk_no_unsubscribe_link" not in rules(mail(body), bulk=True)


def test_an_html_unsubscribe_link_is_seen_by_its_text_or_its_address():
    by_text = mail(f'<p>Nouveautés</p><a href="https://atelier.fr/x/9">Se désabonner</a><p>{FOOTER}</p>',
                   content_type="text/html")
    by_href = mail(f'<p>News</p><a href="https://atelier.fr/unsubscribe?u=9">here</a><p>{FOOTER}</p>',
                   content_type="text/html")
    assert "bulk_no_unsubscribe_link" not in rules(by_text, bulk=True)
    assert "bulk_no_unsubscribe_link" not in rules(by_href, bulk=True)


def test_list_unsubscribe_alone_is_not_a_visible_link():
    found = LINTER.check(mail(f"Nouveautés.\r\n{FOOTER}",
                              extra="List-Unsubscribe: <https://atelier.fr/u/1>\r\n"), True)
    finding = next(f for f in found.findings if f.rule == "bulk_no_unsubscribe_link")
    assert "List-Unsubscribe alone" in finding.evidence


def test_bulk_rules_apply_to_bulk_mail_only():
    assert not {"bulk_no_unsubscribe_link", "bulk_no_postal_address"} & rules(mail("Bonjour."))


@pytest.mark.parametrize("footer", [
    "Atelier Dupuis - 12 rue des Lilas - 75011 Paris",
    "BrightDesk Ltd, 4 Queen Street, London EC4N 1SP",
    "Tél. : 01 23 45 67 89",
    "Call us: +44 20 7946 0958",
])
def test_a_postal_address_or_a_contact_line_is_seen(footer):
    body = f"Nouveautés.\r\nSe désinscrire : https://atelier.fr/u/1\r\n{footer}"
    assert "bulk_no_postal_address" not in rules(mail(body), bulk=True)


@pytest.mark.parametrize("sender", ["noreply@atelier.fr", "no-reply+factures@atelier.fr",
                                    "ne-pas-repondre@atelier.fr", "Do_Not_Reply@atelier.fr"])
def test_noreply_senders(sender):
    assert "noreply_sender" in rules(mail("Bonjour.", sender=sender))


def test_a_reply_to_noreply_counts_too_and_a_named_address_does_not():
    assert "noreply_sender" in rules(mail("Bonjour.", extra="Reply-To: noreply@atelier.fr\r\n"))
    assert "noreply_sender" not in rules(mail("Bonjour.", sender="norbert@atelier.fr"))


@pytest.mark.parametrize(("sender", "free"), [("jean.dupuis@orange.fr", True),
                                              ("atelier@wanadoo.fr", True),
                                              ("x@gmail.com", True), ("x@atelier.fr", False)])
def test_freemail_senders(sender, free):
    assert ("freemail_sender" in rules(mail("Bonjour.", sender=sender))) is free


def test_an_address_in_the_text_is_no_spam_phrase():
    """x@free.fr, https://free.fr: the ISP's name is not the word "free"."""
    body = "Hello, write to support@free.fr or see https://free.fr/help for the router."
    assert "spam_phrases" not in rules(mail(body, subject="Your router"))


def test_french_mail_is_checked_against_the_french_list():
    """"free" is on the English list; in French mail it is mostly the ISP."""
    body = "Bonjour, votre box Free est installée. Merci de votre confiance et à bientôt."
    assert "spam_phrases" not in rules(mail(body))


def test_html_width_from_attributes_and_styles():
    assert "html_width" in rules(mail('<table width="1024"><tr><td>x</td></tr></table>',
                                      content_type="text/html"))
    assert "html_width" in rules(mail('<div style="color: red; width: 960px">x</div>',
                                      content_type="text/html"))
    assert "html_width" not in rules(mail('<div style="max-width: 1200px; width:600px">x</div>',
                                          content_type="text/html"))


def test_active_content_names_the_tags():
    report = LINTER.check(mail('<form action="x"><input></form><iframe src="y"></iframe>',
                               content_type="text/html"))
    finding = next(f for f in report.findings if f.rule == "active_content")
    assert finding.evidence == "<form>, <iframe>"


def test_missing_date_and_message_id_are_said_and_cost_nothing():
    bare = b"From: contact@atelier.fr\r\nTo: c@example.net\r\nSubject: Rendez-vous\r\n\r\nBonjour.\r\n"
    report = LINTER.check(bare)
    assert {f.rule: f.score for f in report.findings} == {"missing_date": 0.0,
                                                          "missing_message_id": 0.0}
    assert report.score == 0


def test_garbage_is_linted_not_raised():
    for data in (b"", b"\x00\xff" * 100, b"Subject: =?bogus?Q?x?=\r\n\r\n<html><<<>",
                 b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x--"):
        LINTER.check(data)

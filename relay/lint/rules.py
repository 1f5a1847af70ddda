"""The lint's rules: each reads the extracted message and says what it found, or nothing.

A rule is a function `(Context) -> Found | None`; `RULES` lists them in the order reports
show them. Scores, thresholds and advice are data (`data/rules.yaml`), handed to each rule as
`c.rule` (its own entry); the logic is here. `evidence` says what was seen, in the words
of the message (the phrases, the ratio, the file names), never a recipient address.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from relay.lint import text as t
from relay.lint.message import Extracted


@dataclass
class Context:
    message: Extracted
    bulk: bool
    language: str
    tokens: list[bytes]                 # folded words of subject, text and HTML text
    present: set[bytes]                 # ... as a set
    phrases: "t.Phrases"
    freemail: frozenset[str]
    rule: dict                          # this rule's entry in rules.yaml
    plain: str                          # the text parts, or the HTML's text when none


@dataclass
class Found:
    where: str                          # subject, text, html, attachment, header
    evidence: str
    score: float | None = None          # None: the rule's `score`


def spam_phrases(c: Context) -> Found | None:
    found = c.phrases.find(c.tokens, c.present)
    if not found:
        return None
    score = min(c.rule["max"], c.rule["score"] * len(found))
    return Found("subject, text" if c.message.subject else "text",
                 ", ".join(f"« {p} »" if c.language == "fr" else f'"{p}"' for p in found[:8])
                 + (f" (+{len(found) - 8})" if len(found) > 8 else ""), score)


def subject_all_caps(c: Context) -> Found | None:
    if t.all_caps(c.message.subject, c.rule["min_letters"]):
        return Found("subject", c.message.subject[:80])
    return None


def body_capitals(c: Context) -> Found | None:
    ratio, letters = t.capitals_ratio(c.plain)
    if letters >= c.rule["min_letters"] and ratio > c.rule["ratio"]:
        return Found("text", f"{ratio:.0%} of {letters} letters are capitals")
    return None


def exclamation(c: Context) -> Found | None:
    count, run = t.exclamations(c.message.subject + "\n" + c.plain, c.rule["run"])
    if run or count > c.rule["max_count"]:
        return Found("subject, text", f"{count} '!'" + (f", runs of {c.rule['run']}+" if run else ""))
    return None


def emoji_density(c: Context) -> Found | None:
    in_subject = t.emojis(c.message.subject)
    in_text = t.emojis(c.plain)
    per_1000 = in_text * 1000 / max(len(c.plain), 1)
    if in_subject > c.rule["max_subject"] or (in_text > 2 and per_1000 > c.rule["per_1000_chars"]):
        return Found("subject, text", f"{in_subject} in the subject, {in_text} in the text")
    return None


def html_only(c: Context) -> Found | None:
    if c.message.html and not c.message.text.strip():
        return Found("html", "no text/plain part")
    return None


def parts_differ(c: Context) -> Found | None:
    if not (c.message.html and c.message.text.strip()):
        return None
    text_words = set(t.words(c.message.text))
    html_words = set(t.words(c.message.html_text))
    if max(len(text_words), len(html_words)) < c.rule["min_words"]:
        return None
    union = text_words | html_words
    differ = len(text_words ^ html_words) / len(union)
    if differ >= c.rule["min_difference"]:
        return Found("text, html", f"{differ:.0%} of the words are in one part only")
    return None


def image_ratio(c: Context) -> Found | None:
    images = sum(h.images for h in c.message.html)
    if not images:
        return None
    chars = len(c.message.html_text)
    if chars / images < c.rule["min_text_per_image"]:
        return Found("html", f"{images} images, {chars} characters of text")
    return None


def image_without_dimensions(c: Context) -> Found | None:
    missing = sum(h.images_without_size for h in c.message.html)
    if missing:
        return Found("html", f"{missing} of {sum(h.images for h in c.message.html)} images")
    return None


def active_content(c: Context) -> Found | None:
    tags = sorted({tag for h in c.message.html for tag in h.active if tag in c.rule["tags"]})
    if tags:
        return Found("html", ", ".join(f"<{tag}>" for tag in tags))
    return None


def html_width(c: Context) -> Found | None:
    widest = max((w for h in c.message.html for w in h.widths), default=0)
    if widest > c.rule["max_px"]:
        return Found("html", f"{widest} px")
    return None


def attachment_size(c: Context) -> Found | None:
    total = sum(a.size for a in c.message.attachments)
    if total > c.rule["max_total"]:
        return Found("attachment", f"{total / 1e6:.1f} MB in {len(c.message.attachments)} files")
    return None


def attachment_count(c: Context) -> Found | None:
    if len(c.message.attachments) > c.rule["max_count"]:
        return Found("attachment", f"{len(c.message.attachments)} files")
    return None


def risky_attachment(c: Context) -> Found | None:
    risky = [a.filename for a in c.message.attachments
             if a.filename.rpartition(".")[2].lower() in c.rule["extensions"] and "." in a.filename]
    if risky:
        return Found("attachment", ", ".join(risky[:5]))
    return None


def missing_date(c: Context) -> Found | None:
    return None if c.message.has_date else Found("header", "no Date field")


def missing_message_id(c: Context) -> Found | None:
    return None if c.message.has_message_id else Found("header", "no Message-ID field")


_SEPARATORS = re.compile(r"[._+-]")


@functools.lru_cache(maxsize=4)
def _local_parts(listed: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_SEPARATORS.sub("", p) for p in listed)


def noreply_sender(c: Context) -> Found | None:
    wanted = _local_parts(tuple(c.rule["local_parts"]))
    for field, address in (("From", c.message.from_address), ("Reply-To", c.message.reply_to)):
        local = address.rpartition("@")[0]
        if local and _SEPARATORS.sub("", local.split("+")[0]) in wanted:
            return Found("header", f"{field}: {address}")
    return None


def freemail_sender(c: Context) -> Found | None:
    domain = c.message.from_address.rpartition("@")[2]
    if domain in c.freemail:
        return Found("header", f"From: {domain}")
    return None


_UNSUBSCRIBE = re.compile(r"unsubscri|desinscri|desabonn|opt[ -]?out|stop (?:receiving|recevoir)"
                          r"|ne plus recevoir|manage (?:your )?(?:preferences|subscription)"
                          r"|gerer (?:vos|mes) (?:preferences|abonnements?)")
_URL = re.compile(r"(?:https?://|mailto:)\S+", re.I)


_HOST = re.compile(r"https?://(?:[^/?#@\s]*@)?([A-Za-z0-9.-]+\.[A-Za-z]{2,63})(?=[:/?#\s\"'<>)]|$)",
                   re.I)
MAX_LINK_HOSTS = 20


def link_hosts(message: Extracted) -> tuple[str, ...]:
    """The hosts the message's http(s) links point to (HTML hrefs and text URLs), for the
    blocklist watch: a linked domain on a blocklist gets the mail refused as surely."""
    found = [m.group(1) for h in message.html for href, _ in h.links
             for m in [_HOST.match(href.strip())] if m]
    found += _HOST.findall(message.text)
    return tuple(dict.fromkeys(host.lower().rstrip(".") for host in found))[:MAX_LINK_HOSTS]


def bulk_no_unsubscribe_link(c: Context) -> Found | None:
    if not c.bulk:
        return None
    for h in c.message.html:
        for href, label in h.links:
            if _UNSUBSCRIBE.search(t.fold(href + " " + label)):
                return None
    lines = c.message.text.splitlines()
    for i, line in enumerate(lines):               # a text part: a line that says so, with
        if _UNSUBSCRIBE.search(t.fold(line)) and \
                any(_URL.search(near) for near in lines[i:i + 2]):    # a link on it or below
            return None
    return Found("text, html", "no link that says unsubscribe"
                 + (" (List-Unsubscribe alone is not enough)" if c.message.list_unsubscribe else ""))


_POSTAL = re.compile(
    r"\b\d{5}\s+[A-Za-zÀ-ÿ][\w'’ -]{2,}"                               # FR: 75011 Paris
    r"|\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée"
    r"|allee|impasse|route|quai|cours|square|street|st\.|road|rd\.|lane|drive|way)\b"
    r"|(?-i:\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b)"                      # UK postcode
    r"|(?-i:\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)", re.I)                    # US: CA 94105
_CONTACT = re.compile(
    r"(?:\+\d{1,3}[\s.]?|\b0)[1-9](?:[\s.-]?\d{2}){4}\b"                # FR phone
    r"|\+\d[\d\s().-]{8,}\d"                                            # international phone
    r"|\b(?:contact|tel|tél|phone|téléphone|telephone)\s*:", re.I)


def bulk_no_postal_address(c: Context) -> Found | None:
    if not c.bulk:
        return None
    seen = c.message.text + "\n" + c.message.html_text
    if _POSTAL.search(seen) or _CONTACT.search(seen):
        return None
    return Found("text, html", "no postal address, phone number or contact line")


RULES: dict[str, Callable[[Context], Found | None]] = {
    rule.__name__: rule for rule in (
        spam_phrases, subject_all_caps, body_capitals, exclamation, emoji_density, html_only,
        parts_differ, image_ratio, image_without_dimensions, active_content, html_width,
        attachment_size, attachment_count, risky_attachment, missing_date, missing_message_id,
        noreply_sender, freemail_sender, bulk_no_unsubscribe_link, bulk_no_postal_address)
}

"""The lint against a corpus of real-looking mail (`tests/data/lint/`, described in its
`corpus.yaml`): French and English transactional mail (invoices, reminders, password resets,
an order confirmation) must score low, and never above the default `content.max_score`;
newsletters and spam must score high, in the order of how bad they are, with the findings
each was built to trigger."""
from __future__ import annotations

import email
import email.policy
import random
from base64 import encodebytes
from pathlib import Path

import pytest
import yaml

from relay.config import Content
from relay.lint import Linter

CORPUS = Path(__file__).parents[2] / "data" / "lint"
MANIFEST = yaml.safe_load((CORPUS / "corpus.yaml").read_text())
MAX_SCORE = Content().max_score


@pytest.fixture(scope="module")
def reports():
    linter = Linter()
    return {name: linter.check((CORPUS / name).read_bytes(), bulk=entry["kind"] == "bulk")
            for name, entry in MANIFEST.items()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_message_has_the_findings_it_was_built_for_and_its_language(name, reports):
    entry, report = MANIFEST[name], reports[name]
    scored = {f.rule for f in report.findings if f.score}
    assert scored == set(entry.get("findings", [])), report.findings
    assert report.language == entry["lang"]


def test_transactional_mail_scores_low_and_never_above_max_score(reports):
    low = {name: reports[name].score for name, e in MANIFEST.items() if e["expect"] == "low"}
    assert {e["kind"] for n, e in MANIFEST.items() if n in low} == {"transactional", "bulk"}
    assert all(score <= 2 for score in low.values()), low
    assert all(reports[name].score <= MAX_SCORE for name, e in MANIFEST.items()
               if e["kind"] == "transactional"), {n: reports[n].score for n in MANIFEST}


def test_the_ranking_low_then_medium_then_high(reports):
    bands = {band: [reports[n].score for n, e in MANIFEST.items() if e["expect"] == band]
             for band in ("low", "medium", "high")}
    assert max(bands["low"]) < min(bands["medium"])
    assert max(bands["medium"]) < min(bands["high"])
    assert min(bands["high"]) > MAX_SCORE              # refuse_bulk would refuse the spam


def test_advice_is_in_the_message_language(reports):
    advice = yaml.safe_load((Path(__file__).parents[3] / "relay" / "lint" / "data" /
                             "rules.yaml").read_text())
    for name, language in (("fr-promo-spam.eml", "fr"), ("en-spam.eml", "en")):
        for finding in reports[name].findings:
            assert finding.advice == advice[finding.rule]["advice"][language]


def test_the_guides_phrases_are_the_evidence(reports):
    phrases = next(f for f in reports["fr-promo-spam.eml"].findings if f.rule == "spam_phrases")
    assert "« offre exceptionnelle »" in phrases.evidence and "« commander maintenant »" in phrases.evidence
    shown, _, more = phrases.evidence.partition(" (+")
    assert shown.count("«") + int(more.rstrip(")") or 0) >= 10    # the guides' ten, and more
    assert phrases.score == 6.0                          # capped


def test_heavy_attachments_are_found_by_their_decoded_size():
    """en-attachments.eml with its zip made 2.5 MB (made here: not worth the repository)."""
    message = email.message_from_bytes((CORPUS / "en-attachments.eml").read_bytes(),
                                       policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "application/zip":
            part.set_payload(encodebytes(random.Random(1).randbytes(2_500_000)).decode())
    heavy = message.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
    report = Linter().check(heavy)
    found = {f.rule: f for f in report.findings}
    assert {"attachment_size", "risky_attachment"} <= set(found)
    assert found["attachment_size"].evidence == "2.6 MB in 3 files"    # decoded, all three
    assert "ColourCheck-Setup.exe" in found["risky_attachment"].evidence
    assert ".docm" in found["risky_attachment"].evidence

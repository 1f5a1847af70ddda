"""relay.lint.text: folding, phrase matching, language, capitals, exclamation marks, emojis."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.lint import text as t


@pytest.mark.parametrize(("written", "phrase"), [
    ("C'est GRATUIT !", "gratuit"),
    ("Offre  Exceptionnelle, ce soir", "offre exceptionnelle"),
    ("une promotion-spéciale", "promotion spéciale"),        # punctuation between words
    ("PROMOTION SPECIALE", "promotion spéciale"),            # accents dropped on either side
    ("100% FREE for you", "100% free"),
    ("un cœur d'artichaut", "coeur"),                         # ligature spelled out
])
def test_phrases_match_whatever_the_case_accents_and_punctuation(written, phrase):
    assert t.Phrases([phrase]).find(t.words(written)) == [phrase]


@pytest.mark.parametrize(("written", "phrase"), [
    ("freedom of choice", "free"),                            # whole words only
    ("un argentier", "argent"),
    ("sans fraises", "sans frais"),
    ("offre, puis exceptionnelle", "offre puis"),              # the words in order
])
def test_phrases_do_not_match_inside_words(written, phrase):
    if phrase == "offre puis":
        assert t.Phrases([phrase]).find(t.words(written)) == [phrase]
        return
    assert t.Phrases([phrase]).find(t.words(written)) == []


def test_each_phrase_is_reported_once_as_the_list_spells_it_longest_first():
    phrases = t.Phrases(["Sans frais", "gratuit", "gratuit et sans frais", "argent"])
    found = phrases.find(t.words("Gratuit et sans frais. GRATUIT ! sans frais, de l'argent"))
    assert found == ["gratuit et sans frais", "argent"]   # the others only inside the first


def test_a_phrase_of_three_words_needs_all_three_in_order():
    phrases = t.Phrases(["gagnez de l'argent"])
    assert phrases.find(t.words("Gagnez de l’argent !")) == ["gagnez de l'argent"]
    assert phrases.find(t.words("gagnez de temps, l'argent")) == []


def test_text_in_another_script_still_has_words():
    assert t.words("Привет МИР, hello") == ["привет".encode(), "мир".encode(), b"hello"]


@given(st.text(max_size=200))
def test_the_bytes_shortcut_agrees_with_unicode_words(text):
    """words() takes a bytes-level shortcut for Latin text: the same words as the Unicode
    word pattern on the folded text, for any text."""
    assert t.words(text) == [w.encode() for w in t._WORD.findall(t.fold(text))]


def test_typographic_punctuation_separates_words():
    assert t.words("l\u2019argent\u00a0gratuit \u00abvite\u00bb") == \
        [b"l", b"argent", b"gratuit", b"vite"]


@pytest.mark.parametrize(("sample", "language"), [
    ("Bonjour, vous trouverez votre facture du mois de novembre. Merci et à bientôt.", "fr"),
    ("Hello, please find your invoice for November attached. Thank you.", "en"),
    ("12345 67890", "en"),
])
def test_language_is_told_from_the_commonest_words(sample, language):
    assert t.language(set(t.words(sample))) == language


def test_capitals_are_counted_among_letters_unicode_aware():
    ratio, letters = t.capitals_ratio("ÉTÉ CHAUD et Bonjour, 2026 !")
    assert letters == 17 and ratio == pytest.approx(9 / 17)
    ratio, letters = t.capitals_ratio("ПРИВЕТ мир")            # the Unicode path
    assert letters == 9 and ratio == pytest.approx(6 / 9)
    assert t.capitals_ratio("") == (0.0, 0)


def test_a_subject_is_all_caps_only_with_enough_letters():
    assert t.all_caps("OFFRE EXCEPTIONNELLE !!!", 10)
    assert t.all_caps("ÉTÉ À PRIX CASSÉS", 10)
    assert not t.all_caps("RE: OK", 10)
    assert not t.all_caps("OFFRE Exceptionnelle", 10)


def test_exclamation_runs_and_counts():
    assert t.exclamations("Vite !! Oui !", 2) == (3, True)
    assert t.exclamations("Un ! deux ! trois !", 2) == (3, False)


def test_emojis_are_counted_not_other_symbols():
    assert t.emojis("Promo 🎁🔥 ☀ ok") == 3
    assert t.emojis("Prix: 10 € — « bien »") == 0

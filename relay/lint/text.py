"""Text as the lint's rules read it: words folded for matching, the message's language, spam
phrases, capitals, exclamation marks and emojis.

Folding: case-insensitive (`casefold`), accent-insensitive (NFKD, marks dropped; œ, æ and ß
spelled out), punctuation-insensitive (only runs of letters and digits are words), so
"OFFRE EXCEPTIONNELLE !" and "offre exceptionnelle" are the same words. Phrases match whole
words: "free" is not in "freedom". Each pass over the text is a C-level one (`translate`,
`normalize`, `findall`), then a loop over the words that can start a phrase only.
"""
from __future__ import annotations

import re
import unicodedata

_LIGATURES = {"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"}
# punctuation and spaces of French typography: separators, so never glue two words together
_SEPARATORS = dict.fromkeys("\u00a0\u202f\u2009\u2019\u2018\u00ab\u00bb\u2013\u2014\u2026"
                            "\u201c\u201d\u2022\u00b7\u20ac\u00a3", " ")
_TRANSLATE = str.maketrans({**_LIGATURES, **_SEPARATORS})
_MARKS = re.compile("[\u0300-\u036f]")            # combining accents, once NFKD split them off
_WORD = re.compile(r"[^\W_]+")
_LETTERS = re.compile(r"[^\W\d_]+")
# ASCII letters and digits kept (capitals made small), everything else a space
_ALNUM = bytes(ord(chr(c).lower()) if chr(c).isalnum() and c < 128 else 32 for c in range(256))
# emoji: pictographs, symbols and dingbats, flags
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")
_EXCLAIM_RUN: dict[int, re.Pattern] = {}
_ADDRESSES = re.compile(r"\S+@\S+|\b(?:https?://|www\.)\S+", re.I)

_FRENCH = frozenset(w.encode() for w in (
    "le la les de des du et vous votre vos pour est une un nous sur avec pas dans au aux ce "
    "cette qui que par ne se sont merci bonjour cordialement").split())
_ENGLISH = frozenset(w.encode() for w in (
    "the and you your to of for is with this we our on in are be please have it that at by "
    "will thank thanks hello regards").split())


def unaccented(text: str) -> str:
    """Ligatures spelled out, typographic punctuation made spaces, accents dropped; case kept."""
    if text.isascii():
        return text
    text = text.translate(_TRANSLATE)
    return _MARKS.sub("", unicodedata.normalize("NFKD", text))


def fold(text: str) -> str:
    """Lower case, no accents, ligatures spelled out."""
    return unaccented(text).casefold()


def without_addresses(text: str) -> str:
    """Text with its URLs and email addresses blanked (x@free.fr says nothing about "free")."""
    if "@" in text or "://" in text or "www." in text:
        return _ADDRESSES.sub(" ", text)
    return text


def words(text: str) -> list[bytes]:
    """The folded words of `text` (UTF-8 bytes), in order. Latin text (all of it ASCII once
    its accents are dropped) takes a bytes-level shortcut; anything else the Unicode one."""
    plain = unaccented(text)
    if plain.isascii():
        return plain.encode("ascii").translate(_ALNUM).split()
    return [w.encode() for w in _WORD.findall(plain.casefold())]


def language(present: set[bytes]) -> str:
    """"fr" or "en", by which language's most common words the text (the set of its folded
    words) uses more of; English when it cannot tell."""
    return "fr" if len(_FRENCH & present) > len(_ENGLISH & present) else "en"


class Phrases:
    """A phrase list: one-word phrases as a set; a longer phrase is looked for (a C-level
    substring search in the text's joined words) only when every one of its words is in the
    text, which set operations tell (phrases indexed by their last word, so only those whose
    last word is there are looked at)."""

    def __init__(self, phrases: list[str]) -> None:
        self._spelled: dict[tuple[bytes, ...], str] = {}
        self._singles: set[bytes] = set()
        self._longer: dict[bytes, list[tuple[frozenset[bytes], bytes, tuple[bytes, ...]]]] = {}
        for phrase in phrases:
            key = tuple(words(phrase))
            if not key or key in self._spelled:
                continue
            self._spelled[key] = phrase
            if len(key) == 1:
                self._singles.add(key[0])
            else:
                self._longer.setdefault(key[-1], []).append(      # by its last word: rarer
                    (frozenset(key), b" " + b" ".join(key) + b" ", key))

    def __len__(self) -> int:
        return len(self._spelled)

    def spelled(self) -> list[str]:
        return list(self._spelled.values())

    def find(self, tokens: list[bytes], present: set[bytes] | None = None) -> list[str]:
        """The distinct phrases present in `tokens` (whose set, when the caller has it, is
        `present`), as the list spells them, longest first; a phrase found only inside a
        longer one found ("gratuit" in "100% gratuit") is not counted again."""
        present = set(tokens) if present is None else present
        found = [(w,) for w in self._singles & present]
        maybe = [(needle, key) for last in self._longer.keys() & present
                 for need, needle, key in self._longer[last] if need <= present]
        if maybe:
            joined = b" " + b" ".join(tokens) + b" "
            found += [key for needle, key in maybe if needle in joined]
        found.sort(key=lambda k: (-len(k), self._spelled[k]))
        kept: list[tuple[bytes, ...]] = []
        for key in found:
            if not any(_inside(key, longer) for longer in kept):
                kept.append(key)
        return [self._spelled[k] for k in kept]


def _inside(short: tuple[bytes, ...], long: tuple[bytes, ...]) -> bool:
    n = len(short)
    return n < len(long) and any(long[i:i + n] == short for i in range(len(long) - n + 1))


_UPPER = bytes(range(65, 91))
_NOT_LETTERS = bytes(c for c in range(256) if not (65 <= c <= 90 or 97 <= c <= 122))


def capitals_ratio(text: str) -> tuple[float, int]:
    """Share of the letters that are capitals (Unicode-aware: É is one), and how many letters
    were counted (SpamAssassin's UPPERCASE_* rules). Latin text is counted in C, by deleting
    bytes and comparing lengths."""
    plain = unaccented(text)
    if plain.isascii():
        raw = plain.encode("ascii")
        total = len(raw.translate(None, _NOT_LETTERS))
        upper = len(raw) - len(raw.translate(None, _UPPER))
    else:
        letters = "".join(_LETTERS.findall(plain))
        total = len(letters)
        upper = total - sum(1 for c in letters if not c.isupper())
    return (upper / total if total else 0.0), total


def all_caps(text: str, min_letters: int) -> bool:
    letters = "".join(_LETTERS.findall(text))
    return len(letters) >= min_letters and letters.isupper()


def exclamations(text: str, run: int) -> tuple[int, bool]:
    """How many "!" (and "！"), and whether `run` or more come together."""
    count = text.count("!") + text.count("！")
    pattern = _EXCLAIM_RUN.get(run)
    if pattern is None:
        pattern = _EXCLAIM_RUN[run] = re.compile(f"[!！]{{{run},}}")
    return count, bool(count >= run and pattern.search(text))


def emojis(text: str) -> int:
    return 0 if text.isascii() else len(_EMOJI.findall(text))

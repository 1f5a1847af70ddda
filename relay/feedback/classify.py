"""Bounce classification: which class a refused recipient falls in, and what follows from it.

    BounceClass     the closed set of classes
    classify        (basic code, RFC 3463 enhanced code, text) -> BounceClass, by the rules file
    suppresses      whether a class means the address is dead (suppress it at once)
    feedback_kind   which normalized `FeedbackKind` a reply of that code and class counts as
    parse_reply     "550-5.1.1 The email account ..." -> (550, "5.1.1", "The email account ...")

The rules are data: `bounce_rules.yaml` next to this module, an ordered list of {class,
enhanced, text, note}, first match wins, loaded once. RFC 3463 enhanced codes decide first;
the text refines a missing or generic one (a bare 550 is read as 5.0.0). What each class
implies is code, here, so the rules file cannot make a policy block suppress an address.

    ValueError
     +-- RulesError     the rules file is malformed (unknown class, bad regex, no catch-all)
"""
from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from importlib import resources

import yaml

from relay.feedback.events import FeedbackKind

RULES_FILE = "bounce_rules.yaml"
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_LEADING_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_LEADING_CODE = re.compile(r"^([2-5]\d\d)(?:[ -]|$)")
# A continuation line's "550-5.1.1 " (or "550 5.1.1 ") inside a joined multi-line reply.
_EMBEDDED_PREFIX = re.compile(r"\s[2-5]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?=\s|$)")


class BounceClass(enum.StrEnum):
    """Why a recipient was refused; closed: the rules file maps replies onto these."""
    INVALID_RECIPIENT = "invalid_recipient"   # the address does not exist (X.1.x)
    MAILBOX_DISABLED = "mailbox_disabled"     # it exists and takes no mail (5.2.1)
    MAILBOX_FULL = "mailbox_full"             # over quota (X.2.2)
    MESSAGE_REJECTED = "message_rejected"     # this message or transaction: size, format, protocol
    CONTENT = "content"                       # this message's content: spam, virus, phishing
    POLICY_BLOCK = "policy_block"             # the receiver's policy (5.7.x), our sender address
    REPUTATION = "reputation"                 # block lists, rate limits, 4.7.x deferrals
    SYSTEM = "system"                         # the receiving system or network (X.3.x, X.4.x)
    TEMPORARY = "temporary"                   # any other 4.x.x
    OTHER = "other"                           # a permanent failure no rule explains


# The address is dead: RFC 3463 X.1.x and 5.2.1 (REFERENCE "Bounces and complaints"), and a
# 5yz nothing explains, which RFC 5321 §4.2.1 says not to repeat. Never a policy or reputation
# block: those are about the sender, and suppressing the address would hide the problem.
_SUPPRESSING = frozenset({BounceClass.INVALID_RECIPIENT, BounceClass.MAILBOX_DISABLED,
                          BounceClass.OTHER})
# Refusals of the message or of the sender, not of the address.
_BLOCKING = frozenset({BounceClass.POLICY_BLOCK, BounceClass.REPUTATION, BounceClass.CONTENT,
                       BounceClass.MESSAGE_REJECTED})


class RulesError(ValueError):
    """The bounce rules file is malformed."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the rules file: matches when every pattern it has matches."""
    klass: BounceClass
    enhanced: re.Pattern[str] | None
    text: re.Pattern[str] | None
    note: str

    def matches(self, enhanced: str, text: str) -> bool:
        return ((self.enhanced is None or self.enhanced.search(enhanced) is not None)
                and (self.text is None or self.text.search(text) is not None))


def load_rules(source: str, name: str = RULES_FILE) -> tuple[Rule, ...]:
    """Parse and check a rules file: known classes, valid regexes, a catch-all last."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise RulesError(f"{name}: not YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise RulesError(f"{name}: expected a mapping with a non-empty `rules` list")
    if set(data) - {"rules", "patterns"}:
        raise RulesError(f"{name}: unknown top-level keys {sorted(set(data) - {'rules', 'patterns'})}")
    rules = tuple(_rule(entry, f"{name}: rules[{i}]") for i, entry in enumerate(data["rules"]))
    for i, rule in enumerate(rules):
        catch_all = rule.enhanced is None and rule.text is None
        if catch_all != (i == len(rules) - 1):
            raise RulesError(f"{name}: rules[{i}]: " + (
                "only the last rule may be a catch-all" if catch_all
                else "the last rule must be a catch-all (no enhanced, no text)"))
    return rules


def _rule(entry: object, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: expected a mapping")
    unknown = set(entry) - {"class", "enhanced", "text", "note"}
    if unknown:
        raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        klass = BounceClass(entry.get("class"))
    except ValueError:
        raise RulesError(f"{where}: class must be one of {[c.value for c in BounceClass]}") from None
    note = entry.get("note")
    if not isinstance(note, str) or not note.strip():
        raise RulesError(f"{where}: a note saying why is required")
    return Rule(klass, _pattern(entry.get("enhanced"), 0, f"{where}.enhanced"),
                _pattern(entry.get("text"), re.IGNORECASE, f"{where}.text"), note)


def _pattern(value: object, flags: int, where: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    alternatives = value if isinstance(value, list) else [value]
    if not alternatives or not all(isinstance(a, str) and a for a in alternatives):
        raise RulesError(f"{where}: expected a regex or a list of regexes")
    try:
        return re.compile("|".join(f"(?:{a})" for a in alternatives), flags)
    except re.error as e:
        raise RulesError(f"{where}: bad regex: {e}") from None


@functools.cache
def default_rules() -> tuple[Rule, ...]:
    """The packaged rules file, read and checked once."""
    text = resources.files(__package__).joinpath(RULES_FILE).read_text(encoding="utf-8")
    return load_rules(text)


def classify(code: int, enhanced: str | None, text: str,
             rules: tuple[Rule, ...] | None = None) -> BounceClass:
    """The class of a reply. `enhanced` may be None (or lead `text`); then the generic code of
    the basic code's class stands in for it (550 -> 5.0.0), so only the text can refine it."""
    text = text or ""
    effective = (enhanced or "").strip()
    if not _ENHANCED.match(effective):
        leading = _LEADING_ENHANCED.match(text.lstrip())
        if leading:
            effective = leading.group(1)
        elif 200 <= code < 600:
            effective = f"{code // 100}.0.0"
        else:
            effective = ""
    for rule in rules if rules is not None else default_rules():
        if rule.matches(effective, text):
            return rule.klass
    return BounceClass.OTHER


def suppresses(klass: BounceClass) -> bool:
    """True when the class means the address is dead: suppress it for the sender domain now."""
    return klass in _SUPPRESSING


def feedback_kind(code: int, klass: BounceClass) -> FeedbackKind:
    """The normalized event a reply counts as.

    2xx delivered; 4xx (and a mailbox full, a system failure, a temporary one at any code) a
    soft bounce; 5xx for a policy, reputation or content reason blocked; 5xx for a dead
    address (or an unexplained one) a hard bounce. A hard bounce is exactly what `suppresses`.
    """
    if 200 <= code < 300:
        return FeedbackKind.DELIVERED
    if code < 500 or klass in (BounceClass.MAILBOX_FULL, BounceClass.SYSTEM, BounceClass.TEMPORARY):
        return FeedbackKind.BOUNCED_SOFT
    if klass in _BLOCKING:
        return FeedbackKind.BLOCKED
    return FeedbackKind.BOUNCED_HARD


def parse_reply(line: str) -> tuple[int, str | None, str]:
    """Split an SMTP reply into (basic code, enhanced code, text); 0 and None when absent.

    Takes one line or a multi-line reply (joined or not): the continuation lines' own
    "550-5.1.1 " prefixes are dropped from the text.
    """
    text = " ".join(line.split())
    code, enhanced = 0, None
    match = _LEADING_CODE.match(text)
    if match:
        code, text = int(match.group(1)), text[match.end():]
    match = _LEADING_ENHANCED.match(text)
    if match:
        enhanced, text = match.group(1), text[match.end():]
    text = _EMBEDDED_PREFIX.sub("", " " + text).strip()
    return code, enhanced, text


def classify_reply(line: str) -> tuple[int, str | None, BounceClass]:
    """Parse and classify a whole reply line: (code, enhanced code, class)."""
    code, enhanced, text = parse_reply(line)
    return code, enhanced, classify(code, enhanced, text)

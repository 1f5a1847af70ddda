"""The deliverability lint: outgoing mail scored against the advice the guides give.

`Linter.check(data, bulk)` reads a message (`message.py`), runs each rule of `rules.py` with
its entry of `data/rules.yaml`, and returns a `Report`: the findings (rule, score, where,
evidence, advice in the message's language: French or English, detected from its text), their
total, and the language. The data files are read once per `Linter`:

- `data/rules.yaml`: scores, thresholds and advice, per rule;
- `data/phrases.yaml`: spam phrases per language (sources in the file), matched
  case-, accent- and punctuation-insensitively on whole words (`text.py`);
- `data/freemail.txt`: free mailbox domains (rspamd's list and the French ISPs).

Used by `relay lint FILE.eml` (`cli.py`) and at acceptance (`content.mode`: the count per
rule as a metric and in the `queued` event, or `refuse_bulk`), where it runs off the event
loop, like signing. Nothing here refuses anything: the caller decides.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import yaml

from relay.lint import rules as r
from relay.lint import text as t
from relay.lint.message import extract


@dataclass(frozen=True)
class Finding:
    rule: str
    score: float
    where: str
    evidence: str
    advice: str


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    language: str
    links: tuple[str, ...] = ()      # bulk mail: the hosts its http(s) links point to

    @property
    def score(self) -> float:
        return round(sum(f.score for f in self.findings), 1)

    def top(self, n: int = 3) -> list[Finding]:
        """The `n` findings that weigh most (ties: in rule order)."""
        return sorted((f for f in self.findings if f.score > 0), key=lambda f: -f.score)[:n]

    def as_dict(self) -> dict:
        return {"score": self.score, "language": self.language,
                "findings": [asdict(f) for f in self.findings], "links": list(self.links)}


def _data(name: str) -> str:
    return resources.files("relay.lint").joinpath("data", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def freemail_domains() -> frozenset[str]:
    return frozenset(line.strip() for line in _data("freemail.txt").splitlines()
                     if line.strip() and not line.startswith("#"))


@lru_cache(maxsize=1)
def _rules() -> dict[str, dict]:
    loaded = yaml.safe_load(_data("rules.yaml"))
    missing = set(r.RULES) - set(loaded)
    if missing:                                   # a packaging or editing mistake: say which
        raise RuntimeError(f"relay/lint/data/rules.yaml lacks the rules {sorted(missing)}")
    return loaded


@lru_cache(maxsize=4)
def _phrases(language: str) -> t.Phrases:
    return t.Phrases(yaml.safe_load(_data("phrases.yaml")).get(language, []))


class Linter:
    """The lint with its data loaded. `languages`: the phrase lists in use; a message is
    checked against its own language's list (French mail is not told that "free", the ISP,
    is a spam word), or against all of them when its language is not among them."""

    def __init__(self, languages: tuple[str, ...] = ("fr", "en")) -> None:
        self.rules = _rules()
        self.phrases = {lang: _phrases(lang) for lang in languages}
        self.either = t.Phrases([p for lang in languages for p in _phrases(lang).spelled()])
        self.freemail = freemail_domains()

    def check(self, data: bytes, bulk: bool = False) -> Report:
        message = extract(data)
        has_text = bool(message.text) and not message.text.isspace()
        html_text = message.html_text
        plain = message.text if has_text else html_text
        tokens = t.words(t.without_addresses(
            message.subject + "\n" + plain + ("\n" + html_text if has_text and html_text else "")))
        present = set(tokens)
        language = t.language(present)
        phrases = self.phrases.get(language, self.either)
        context = r.Context(message, bulk, language, tokens, present, phrases, self.freemail, {},
                            plain)
        findings = []
        for name, rule in r.RULES.items():
            entry = context.rule = self.rules[name]
            found = rule(context)
            if found is not None:
                advice = entry["advice"].get(language) or entry["advice"]["en"]
                score = entry["score"] if found.score is None else found.score
                findings.append(Finding(name, float(score), found.where, found.evidence, advice))
        return Report(findings, language, r.link_hosts(message) if bulk else ())

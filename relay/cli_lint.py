"""`relay lint FILE.eml [--json] [--bulk]`: the deliverability lint of one message.

Prints each finding (score, rule, where, what was seen, the advice in the message's
language), then the total against `content.max_score`; `--json` prints one object instead.
Exit 0 at or under `max_score`, 1 above it, 2 when the file cannot be read. The message is
linted as bulk mail with `--bulk`, or when it says it is (List-Unsubscribe, List-Id, or
Precedence: bulk or list). The configuration (`-c`, else ./relay.yaml when present) gives
`content.max_score` and `content.languages`; without one, the defaults (10; fr, en).
"""
from __future__ import annotations

import email
import email.policy
import json
import sys
from pathlib import Path

from relay.config import Content
from relay.lint import Linter, Report

LANGUAGES = {"fr": "French", "en": "English"}


def says_bulk(data: bytes) -> bool:
    headers = email.message_from_bytes(data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0] + b"\r\n\r\n",
                                       policy=email.policy.compat32)
    precedence = (headers.get("Precedence") or "").strip().lower()
    return bool(headers.get("List-Unsubscribe") or headers.get("List-Id")
                or precedence in ("bulk", "list"))


def cmd_lint(args, content: Content) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"relay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if not data.strip():
        print(f"relay: {args.file} is empty: nothing to lint", file=sys.stderr)
        return 2
    bulk = args.bulk or says_bulk(data)
    report = Linter(tuple(content.languages)).check(data, bulk=bulk)
    above = report.score > content.max_score
    if args.json:
        print(json.dumps({**report.as_dict(), "bulk": bulk, "max_score": content.max_score,
                          "above": above}, ensure_ascii=False, indent=2))
    else:
        print(render(args.file, report, bulk, content.max_score))
    return 1 if above else 0


def render(name: str, report: Report, bulk: bool, max_score: float) -> str:
    lines = [f"{name}: {LANGUAGES[report.language]}, linted as "
             f"{'bulk' if bulk else 'transactional'} mail"]
    for f in sorted(report.findings, key=lambda f: -f.score):
        lines.append(f"  {f.score:4.1f}  {f.rule}  [{f.where}] {f.evidence}")
        lines.append(f"        {f.advice}")
    if not report.findings:
        lines.append("  nothing to say")
    verdict = "above" if report.score > max_score else "within"
    lines.append(f"score {report.score:g}: {verdict} content.max_score {max_score:g}")
    return "\n".join(lines)

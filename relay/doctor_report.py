"""What `relay doctor` reports: each check's area, name, status and finding, and the DNS
records to publish. The checks fill it (`doctor.py`, `watch/doctor_checks.py`); `ok` says
whether the domain is ready (only OK and WARN pass).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from relay.signing import dkim


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    MISSING = "MISSING"
    WRONG = "WRONG"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Check:
    area: str                 # SPF | DKIM | DMARC
    name: str                 # what was checked: "record", "route brevo", "selector s1"
    status: Status
    found: str                # what was found, and what to do about it


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str
    reason: str

    @property
    def strings(self) -> list[str]:
        """The value as TXT character-strings of at most 255 octets."""
        return dkim.txt_strings(self.value)


@dataclass
class Report:
    domain: str
    route: str
    checks: list[Check] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status in (Status.OK, Status.WARN) for c in self.checks)

    def add(self, area: str, name: str, status: Status, found: str) -> None:
        self.checks.append(Check(area, name, status, found))

    def publish(self, name: str, value: str, reason: str) -> None:
        self.records.append(Record(name, "TXT", value, reason))

    def as_dict(self) -> dict:
        return {"domain": self.domain, "route": self.route, "ok": self.ok,
                "checks": [{"area": c.area, "check": c.name, "status": c.status.value,
                            "found": c.found} for c in self.checks],
                "records": [{"name": r.name, "type": r.type, "value": r.value,
                             "strings": r.strings, "reason": r.reason} for r in self.records]}

"""A DMARC aggregate report, as relay keeps it: what one receiver saw of one domain's mail
over one period (RFC 7489 appendix C, RFC 9990), reduced to what an operator acts on.

    AggregateReport   who reported (org, report id), the period, the published policy, rows
    Row               one source IP's messages: count, disposition, the policy-evaluated
                      DKIM and SPF results (aligned passes), and the raw auth results
    AuthResult        one DKIM signature's or SPF check's domain and result

Values are normalized when read (`dmarc_reports.py`): lowercase results and domains,
Unix times, counts as ints. `to_json`/`from_json` are how the state stores a report.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class AuthResult:
    domain: str
    result: str                  # pass | fail | none | neutral | softfail | temperror | permerror | policy
    selector: str = ""           # DKIM: the signature's s=
    scope: str = ""              # SPF: mfrom | helo


@dataclass(frozen=True, slots=True)
class Row:
    source_ip: str
    count: int
    disposition: str             # none | quarantine | reject
    dkim: str                    # policy_evaluated: pass (an aligned DKIM pass) | fail
    spf: str                     # policy_evaluated: pass (an aligned SPF pass) | fail
    header_from: str
    envelope_from: str = ""
    dkim_results: tuple[AuthResult, ...] = ()
    spf_results: tuple[AuthResult, ...] = ()
    reasons: tuple[str, ...] = ()    # policy overrides: forwarded, mailing_list, local_policy...

    @property
    def aligned(self) -> bool:
        """DMARC pass: an aligned DKIM or SPF pass (RFC 7489 §4.2)."""
        return self.dkim == "pass" or self.spf == "pass"


@dataclass(frozen=True, slots=True)
class AggregateReport:
    org_name: str                # the reporter ("google.com"); may be "" in the wild
    email: str
    report_id: str
    begin: float                 # the period, Unix time
    end: float
    domain: str                  # policy_published/domain: the domain reported on
    policy: str = "none"         # p
    subdomain_policy: str = ""   # sp
    adkim: str = "r"
    aspf: str = "r"
    testing: bool = False        # RFC 9990 testing=y (RFC 7489: pct < 100 is not this)
    schema: str = "7489"         # "7489" (no namespace) | "9990" (urn:ietf:params:xml:ns:dmarc-2.0)
    rows: tuple[Row, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        """What deduplicates a report (REFERENCE "DMARC aggregate reports")."""
        return (self.org_name, self.report_id)

    @property
    def messages(self) -> int:
        return sum(r.count for r in self.rows)

    @property
    def aligned(self) -> int:
        return sum(r.count for r in self.rows if r.aligned)

    @property
    def failing(self) -> int:
        return self.messages - self.aligned

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> AggregateReport:
        data = json.loads(text)
        rows = tuple(Row(**{**r, "dkim_results": tuple(AuthResult(**a) for a in r["dkim_results"]),
                            "spf_results": tuple(AuthResult(**a) for a in r["spf_results"]),
                            "reasons": tuple(r["reasons"])})
                     for r in data.pop("rows"))
        return cls(**data, rows=rows)

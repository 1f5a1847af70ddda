"""Fuzzing the DMARC aggregate report reader (`relay/watch/dmarc_reports.py`).

Whatever bytes arrive at a feedback address or `relay dmarc ingest`, `read_reports` either
returns well-formed reports or raises `ReportError` (which the listener turns into a 550 and
the CLI into a one-line error): never another exception. Inputs are arbitrary bytes and
mutations of the samples in tests/data/dmarc (bytes flipped, slices cut, repeated or moved,
truncation; compressed samples too, so the zip and gzip readers see damaged archives). A
well-formed report has a report id and domain, non-negative integer counts, a period that
does not run backwards, lowercase results and IP addresses that parse.

Budget: 300 examples.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given, strategies as st

from relay.watch.aggregate import AggregateReport
from relay.watch.dmarc_reports import ReportError, read_reports
from tests.fuzz import budget

DATA = Path(__file__).resolve().parents[1] / "data" / "dmarc"
HOSTILE = {"zip-bomb.zip", "gzip-bomb.xml.gz", "billion-laughs.xml"}     # slow to mutate: big
SAMPLES = [p.read_bytes() for p in sorted(DATA.iterdir())
           if p.suffix in (".xml", ".gz", ".zip", ".eml") and p.name not in HOSTILE]


@st.composite
def mutated_sample(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        length = draw(st.integers(1, 64))
        action = draw(st.sampled_from(["flip", "cut", "repeat", "truncate", "insert"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:at + length]
        elif action == "repeat":
            data[at:at] = data[at:at + length]
        elif action == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from([b"\x00", b"\xff\xfe", b"<!ENTITY x 'y'>",
                                                b"<record>", b"</feedback>", b"\r\n--b\r\n"]))
    return bytes(data)


def check(report: AggregateReport) -> None:
    assert report.report_id and report.domain
    assert 0 <= report.begin <= report.end
    assert report.domain == report.domain.lower()
    for row in report.rows:
        assert isinstance(row.count, int) and row.count >= 0
        ipaddress.ip_address(row.source_ip)
        assert row.dkim == row.dkim.lower() and row.spf == row.spf.lower()
    AggregateReport.from_json(report.to_json())           # what the state stores reads back


@budget(300)
@given(data=st.one_of(st.binary(max_size=2000), mutated_sample(), st.sampled_from(SAMPLES)))
def test_arbitrary_bytes_and_mutated_samples_give_reports_or_a_report_error(data):
    try:
        reports = read_reports(data)
    except ReportError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for report in reports:
        check(report)

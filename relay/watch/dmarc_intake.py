"""DMARC aggregate report intake: reports arriving on the feedback listener or through
`relay dmarc ingest` are read (`dmarc_reports.py`, in a thread: a report may be 32 MB of
XML) and stored per domain in the governance state, deduplicated on (org, report id).

Only reports about the domains relay sends for are kept: a configured domain, or the
organizational domain one of them inherits its DMARC policy from (reports then come for
acme.fr while relay sends as news.acme.fr). Anything else is refused by name, so a stranger
cannot fill the state with reports about other domains.

    ReportError (dmarc_reports.py)
     +-- NotAggregateReport   no report in the input at all
     +-- ForeignReport        a report about a domain relay does not send for
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

from relay.checks.dmarc import organizational_domain
from relay.config import Config
from relay.events import Event, emit
from relay.state import State
from relay.watch.aggregate import AggregateReport
from relay.watch.dmarc_reports import ReportError, read_reports

log = logging.getLogger("relay.dmarc")


class ForeignReport(ReportError):
    """A report about a domain relay does not send for."""


@dataclass(frozen=True, slots=True)
class Ingested:
    reports: list[AggregateReport]
    new: int


def reported_domains(config: Config) -> set[str]:
    """The domains whose reports relay keeps."""
    return set(config.domains) | {organizational_domain(d) for d in config.domains}


class DmarcIntake:
    def __init__(self, state: State, config: Callable[[], Config]) -> None:
        self.state = state
        self.config = config            # the running configuration (it changes on reload)

    async def ingest(self, data: bytes) -> Ingested:
        """Read every report in `data` and store the new ones; ReportError when there is
        none or one is refused (nothing is stored then), StateError when the state cannot
        take them now."""
        reports = await asyncio.to_thread(read_reports, data)
        known = reported_domains(self.config())
        for report in reports:
            if report.domain not in known:
                raise ForeignReport(f"report {report.report_id!r} from {report.org_name} is "
                                    f"about {report.domain}, which relay sends no mail for")
        new = 0
        for report in reports:
            stored = await self.state.record_dmarc_report(report)
            new += stored
            emit(Event.DMARC_REPORT, domain=report.domain, org=report.org_name,
                 report_id=report.report_id, messages=report.messages, aligned=report.aligned,
                 failing=report.failing, duplicate=None if stored else True)
        return Ingested(reports, new)

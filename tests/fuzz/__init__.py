"""Property-based fuzzing of relay's hostile-input surfaces (issue 10, "Hostile input").

Each target has its own example budget, chosen so that the whole folder runs well within a
minute on two cores; runs are derandomized (seeded from the test itself) and keep no example
database, so CI sees the same examples every time. `RELAY_FUZZ_SCALE=10` multiplies every
budget, for a deeper run before a release or after changing a parser.

    target                                              file                          examples
    SMTP sessions over a socket (plain listeners)       test_smtp_session_fuzz.py     300
    SMTP sessions over implicit TLS, with AUTH          test_smtp_session_fuzz.py     80
    pipelined garbage in one write                      test_smtp_session_fuzz.py     100
    MIME parse / add_missing / serialize                test_mime_fuzz.py             300
    line-length re-encoding; the same under tracemalloc test_mime_fuzz.py             150 + 60
    DSN, ARF, read_report: bytes and sample mutations   test_report_parsers_fuzz.py   300
    DSN, ARF, read_report: generated reports            test_report_parsers_fuzz.py   300
    DMARC aggregate reports: bytes and sample mutations test_dmarc_reports_fuzz.py    300
    webhook parsers, per provider (5)                   test_webhook_fuzz.py          200 each
    webhook bodies and headers over HTTP                test_webhook_fuzz.py          80
    config.parse: YAML-ish text; example mutations      test_config_fuzz.py           200 + 300

The whole folder takes about 30-40 s on two cores. Each file also holds the plain regression
tests of what its fuzzing found.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("RELAY_FUZZ_SCALE", "1") or 1))


def budget(max_examples: int, **overrides) -> settings:
    """The settings of one fuzz target: `max_examples` examples (times RELAY_FUZZ_SCALE),
    reproducible (derandomized, no database), no per-example deadline (sockets and the
    email parser have slow examples; bounds are asserted on memory and size instead)."""
    return settings(max_examples=max_examples * SCALE, derandomize=True, database=None,
                    deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture],
                    **overrides)

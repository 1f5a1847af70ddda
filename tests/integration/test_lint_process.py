"""The lint process (`relay/lint/process.py`): the listener hands it each message over a pipe
and reads the report back; when it dies, messages go on without a report and it is started
again; a garbled message is an error answer, not a dead process."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from relay.lint.process import LintProcess

SPAM = (Path(__file__).parents[1] / "data" / "lint" / "fr-promo-spam.eml").read_bytes()
CLEAN = (Path(__file__).parents[1] / "data" / "lint" / "fr-relance.eml").read_bytes()


async def until(predicate, deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not await predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


def test_reports_come_back_for_concurrent_messages_each_its_own():
    async def scenario():
        lint = LintProcess(("fr", "en"))
        await lint.start()
        try:
            reports = await asyncio.gather(*(lint.check(SPAM if i % 2 else CLEAN, bulk=True)
                                             for i in range(20)))
        finally:
            await lint.stop()
        return reports
    reports = asyncio.run(scenario())
    assert [r.score > 10 for r in reports] == [bool(i % 2) for i in range(20)]
    assert all(r.language == "fr" for r in reports)


def test_a_dead_lint_process_costs_no_message_and_is_started_again():
    async def scenario():
        lint = LintProcess(("fr", "en"), timeout=5)
        await lint.start()
        try:
            first = lint._proc.pid
            os.kill(first, signal.SIGKILL)
            await lint._proc.wait()
            assert await lint.check(SPAM, bulk=True) is None      # no report, no exception

            async def again():
                return lint._proc.pid != first and await lint.check(SPAM, bulk=True) is not None
            await until(again)
        finally:
            await lint.stop()
    asyncio.run(scenario())


def test_a_message_the_lint_cannot_read_is_an_error_answer_not_a_dead_process():
    async def scenario():
        lint = LintProcess(("fr", "en"))
        await lint.start()
        try:
            odd = await lint.check(b"\xff\xfe\x00" * 1000 + b"\r\n\r\n\x00", bulk=False)
            after = await lint.check(SPAM, bulk=True)
        finally:
            await lint.stop()
        return odd, after
    odd, after = asyncio.run(scenario())
    assert after is not None and after.score > 10


def test_stop_ends_the_child():
    async def scenario():
        lint = LintProcess(("en",))
        await lint.start()
        proc = lint._proc
        await lint.stop()
        return proc.returncode
    assert asyncio.run(scenario()) is not None


def test_a_very_large_message_is_linted_on_its_first_megabytes():
    """30 MB of attachment: the lint reads the first 8 MB (it is not kept busy for seconds,
    with every session waiting on it), and still sees an attachment over the size limit."""
    import base64

    from relay.lint.process import MAX_LINTED
    blob = base64.encodebytes(b"\x00" * (22 << 20)).replace(b"\n", b"\r\n")
    big = (b"From: a@atelier.fr\r\nSubject: photos\r\nContent-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nLes photos.\r\n--b\r\n"
           b"Content-Type: application/zip; name=photos.zip\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: attachment; filename=photos.zip\r\n\r\n" + blob + b"--b--\r\n")
    assert len(big) > 3 * MAX_LINTED

    async def scenario():
        lint = LintProcess(("fr", "en"), timeout=5)
        await lint.start()
        try:
            return await lint.check(big, bulk=False)
        finally:
            await lint.stop()
    report = asyncio.run(scenario())
    assert report is not None
    size = next(f for f in report.findings if f.rule == "attachment_size")
    assert 2.0 < float(size.evidence.split(" MB")[0]) <= MAX_LINTED / 1e6   # what it read

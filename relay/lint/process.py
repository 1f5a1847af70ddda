"""The lint process: the deliverability lint runs beside the listener, not in it.

The listener's event loop is the relay's busiest thread; a lint of a 10 KB message is
~0.3 ms of Python, and in a thread of the listener process it holds the GIL the loop needs:
measured, that cost a quarter of the acceptance rate. So `LintProcess` (in the listener
process) starts `python -m relay.lint.process LANGUAGES`, writes it each message (a line
`<id> <bulk 0|1> <length>`, then the bytes) and reads one JSON line per message back (the
report, or an error). The listener's share is a pipe write and a short JSON read.

A message is linted on its first 8 MB (`MAX_LINTED`): what a bigger one holds past that (the
end of a large attachment) is not looked at. Never costs a message: a report that does not
come within `timeout`, a lint that fails, or a child that died gives None, and the message
goes on without its findings; a dead child is started again (after a second), and stops when
its stdin closes (the listener stopped or was killed).
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys

from relay.lint import Finding, Linter, Report

log = logging.getLogger("relay.lint")

_RESTART_DELAY = 1.0
_LIMIT = 1 << 20                    # the longest report line
MAX_LINTED = 8 << 20                # bytes of a message the lint reads: the rest is not looked at


class LintProcess:
    """The listener process's handle on the lint process."""

    def __init__(self, languages: tuple[str, ...], timeout: float = 5.0) -> None:
        self.languages = languages
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._reader: asyncio.Task | None = None
        self._starting: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.lint.process", ",".join(self.languages),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=_LIMIT)
        self._reader = asyncio.create_task(self._read(self._proc))

    async def check(self, data: bytes, bulk: bool) -> Report | None:
        """The report on `data` (its first `MAX_LINTED` bytes: a 50 MB message would keep
        the lint busy, and every session waiting on it, for seconds), or None when the lint
        cannot give one in time."""
        data = data[:MAX_LINTED]
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin.is_closing():
            return None
        self._next += 1
        key = self._next
        future = self._pending[key] = asyncio.get_running_loop().create_future()
        try:
            proc.stdin.write(b"%d %d %d\n%s" % (key, bulk, len(data), data))   # one write
            return await asyncio.wait_for(future, self.timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.warning("no lint report (%s); the message goes on without one",
                        type(exc).__name__)
            return None
        finally:
            self._pending.pop(key, None)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            try:
                answer = json.loads(line)
                future = self._pending.get(answer["id"])
                report = (Report([Finding(**f) for f in answer["findings"]], answer["language"],
                                 tuple(answer.get("links", ())))
                          if "findings" in answer else None)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("the lint process wrote an unreadable line (%s); ignored", exc)
                continue
            if "error" in answer:
                log.error("the lint failed on a message: %s", answer["error"])
            if future is not None and not future.done():
                future.set_result(report)
        await proc.wait()
        for future in self._pending.values():     # their answers will not come
            if not future.done():
                future.set_result(None)
        if not self._stopping:
            log.error("the lint process exited with %s; starting it again", proc.returncode)
            self._starting = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        await asyncio.sleep(_RESTART_DELAY)
        if not self._stopping:
            await self.start()

    async def stop(self) -> None:
        self._stopping = True
        if self._starting is not None:
            self._starting.cancel()
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()                    # EOF: the child exits
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def restart(self, languages: tuple[str, ...]) -> None:
        """With other phrase lists (a reload that changed `content.languages`), or at all (a
        reload that turned the lint on)."""
        await self.stop()
        self.languages = languages
        await self.start()


def serve(languages: tuple[str, ...], source, sink) -> None:
    """The child's loop: a message in, a JSON line out, until the input ends."""
    linter = Linter(languages)
    while True:
        header = source.readline()
        if not header:
            return
        try:
            key, bulk, length = (int(part) for part in header.split())
        except ValueError:
            return                                # not the listener talking: stop
        data = source.read(length)
        try:
            answer = {"id": key, **linter.check(data, bool(bulk)).as_dict()}
        except Exception as exc:                  # a message the lint cannot read
            answer = {"id": key, "error": f"{type(exc).__name__}: {exc}"}
        sink.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
        sink.flush()


def main() -> None:
    from relay import events
    events.configure()
    languages = tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else ("fr", "en")
    # a large read buffer: a 10 KB message in one read, and what else is waiting with it
    serve(languages, open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False),
          sys.stdout.buffer)


if __name__ == "__main__":
    main()

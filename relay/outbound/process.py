"""The delivery process: the delivery pipeline runs beside the SMTP listeners, not among them.

Acceptance and delivery each need a CPU core's worth of Python under load, and one process
has one GIL; like Postfix's smtpd and smtp, relay runs them as two processes sharing the
spool (SQLite in WAL mode serializes their writes). `DeliveryProcess` (in the listener
process) starts `python -m relay.outbound.process`, hands it the configuration on stdin,
nudges it through a pipe when a message was queued, and restarts it if it dies. The child
stops, finishing the attempts under way, when the pipe closes: on a clean shutdown, and
also when the parent is killed, so no delivery process outlives its relay.

The child writes a snapshot of its counters (`metrics.snapshot()`) as one JSON line on its
stdout every second when they changed, and once more as it exits; the parent serves them
added to its own, and keeps a replaced child's last numbers so the sums never go back; and
its events of that second as a JSON object `{"events": [...]}`, which the parent adds to its
recent events (`events.RECENT`, the console's event page).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys

from relay import events, metrics
from relay.clock import SystemClock
from relay.compose import build_delivery, prime_metrics
from relay.config import Config

log = logging.getLogger("relay.delivery")

_RESTART_DELAY = 1.0
_REPORT_EVERY = 1.0                 # seconds between the child's metrics snapshots
_REPORT_BACKLOG = 1 << 20           # the parent is not reading: skip snapshots, never block


class DeliveryProcess:
    """The listener process's handle on the delivery process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._wake_w: int | None = None
        self._wake_soon = False         # a wake-up byte is due at the end of this loop turn
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self._reloading = False
        self._reader: asyncio.Task | None = None
        # (what the children before this one counted, the running child's last snapshot):
        # one tuple, replaced whole, so a scrape (in another thread) never sees half of it
        self._counts: tuple[dict[tuple, float], list[metrics.Sample]] = ({}, [])

    def samples(self) -> list[metrics.Sample]:
        """The delivery process's counters, including those of the processes it replaced."""
        return [(name, dict(labels), value) for (name, labels), value in self._totals().items()]

    def _totals(self) -> dict[tuple, float]:
        retired, current = self._counts
        totals = dict(retired)
        for name, labels, value in current:
            key = (name, tuple(sorted(labels.items())))
            totals[key] = totals.get(key, 0.0) + value
        return totals

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.outbound.process", str(read_end),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(read_end,),
            limit=_REPORT_BACKLOG * 16)
        os.close(read_end)
        self._reader = asyncio.create_task(self._read_metrics(self._proc.stdout))
        self._wake_w = write_end
        self._proc.stdin.write(self.config.model_dump_json().encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()

    async def _read_metrics(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stdout.readline()
                if not line:
                    return                        # the child exited
                data = json.loads(line)
                if isinstance(data, dict):        # the child's newest events
                    events.RECENT.extend(data["events"])
                    continue
                current = [(str(name), {str(k): str(v) for k, v in labels.items()}, float(value))
                           for name, labels, value in data]
            except (ValueError, TypeError, AttributeError, KeyError):
                log.warning("the delivery process sent an unreadable metrics line; ignored")
                continue
            self._counts = (self._counts[0], current)

    async def _retire(self) -> None:
        """The child exited: read its last snapshot, and keep its numbers (idempotent)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)    # a cancelled caller must not cancel it
        self._counts = (self._totals(), [])

    async def _supervise(self) -> None:
        while not self._stopping:
            code = await self._proc.wait()
            if self._stopping:
                return
            await self._retire()
            if self._reloading:                   # it finished its attempts: start the new one
                self._reloading = False
                await self._spawn()
                continue
            metrics.DELIVERY_RESTARTS.inc()
            log.error("the delivery process exited with %s; restarting it", code)
            self._close_pipe()
            await asyncio.sleep(_RESTART_DELAY)
            if not self._stopping:
                await self._spawn()

    async def reload(self, config: Config) -> None:
        """Replace the delivery process by one running `config`; attempts under way finish."""
        self.config = config
        self._reloading = True
        self._close_pipe()

    def wake(self) -> None:
        """Tell the delivery process that something was queued (coalesced, never blocks): one
        byte for all the messages queued in one turn of the event loop (a group commit
        resolves its batch's sessions together), written at the end of that turn."""
        if self._wake_w is None or self._wake_soon:
            return
        self._wake_soon = True
        asyncio.get_running_loop().call_soon(self._write_wake)

    def _write_wake(self) -> None:
        self._wake_soon = False
        if self._wake_w is None:
            return
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass                                  # the pipe is full: a wake-up is pending anyway
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def _close_pipe(self) -> None:
        if self._wake_w is not None:
            os.close(self._wake_w)
            self._wake_w = None

    async def stop(self, timeout: float) -> None:
        self._stopping = True
        self._close_pipe()                        # EOF: the child finishes its attempts and exits
        if self._proc is None:
            return
        try:
            await asyncio.wait_for(self._proc.wait(), timeout + 5)
        except asyncio.TimeoutError:
            log.error("the delivery process did not stop in time; killing it")
            self._proc.kill()
            await self._proc.wait()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._retire()


# --- the child ---------------------------------------------------------------------------

async def _serve(config: Config, wake_fd: int, report_fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    spool, state, delivery = await build_delivery(config, SystemClock())

    def on_wake() -> None:
        try:
            data = os.read(wake_fd, 4096)
        except BlockingIOError:
            return
        if data:
            delivery.wake()
        else:                                     # EOF: the listener process is gone
            loop.remove_reader(wake_fd)
            done.set()

    os.set_blocking(wake_fd, False)
    loop.add_reader(wake_fd, on_wake)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    prime_metrics(config)
    report, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(report_fd, "wb", 0))
    reporter = asyncio.create_task(_report(report))
    delivery.start()
    await done.wait()
    await delivery.stop(timeout=30.0)
    await state.close()                           # the rate windows, for the next process
    spool.close()
    reporter.cancel()
    _report_once(report, "")
    for _ in range(100):                          # let the parent read the last numbers
        if not report.get_write_buffer_size():
            break
        await asyncio.sleep(0.02)
    report.close()


async def _report(transport: asyncio.WriteTransport) -> None:
    last, sent = "", 0
    while True:
        last = _report_once(transport, last)
        sent = _report_events(transport, sent)
        await asyncio.sleep(_REPORT_EVERY)


def _report_events(transport: asyncio.WriteTransport, sent: int) -> int:
    """The events logged since the last report, for the console's event page (best effort:
    a backlog drops them, the log has them all)."""
    new = events.RECENT.newer_than(sent)
    if not new or transport.is_closing() or transport.get_write_buffer_size() >= _REPORT_BACKLOG:
        return events.RECENT.added
    try:
        transport.write(json.dumps({"events": new}, separators=(",", ":"), default=str).encode() + b"\n")
    except (RuntimeError, OSError):
        pass
    return events.RECENT.added


def _report_once(transport: asyncio.WriteTransport, last: str) -> str:
    if transport.is_closing():                    # the listener is gone: nobody reads them
        return last
    line = json.dumps(metrics.snapshot(), separators=(",", ":"))
    if line != last and transport.get_write_buffer_size() < _REPORT_BACKLOG:
        try:
            transport.write(line.encode() + b"\n")
        except (RuntimeError, OSError):           # closed meanwhile (uvloop raises RuntimeError)
            return last
        return line
    return last


def main() -> None:
    events.configure()
    config = Config.model_validate_json(sys.stdin.buffer.read())
    events.configure(config.logging.format, config.logging.level)
    report_fd = os.dup(1)                         # stdout carries metrics snapshots only;
    os.dup2(2, 1)                                 # anything printed goes to the log instead
    try:
        import uvloop
        uvloop.run(_serve(config, int(sys.argv[1]), report_fd))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(config, int(sys.argv[1]), report_fd))


if __name__ == "__main__":
    main()

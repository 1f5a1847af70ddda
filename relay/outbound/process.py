"""The delivery process: the delivery pipeline runs beside the SMTP listeners, not among them.

Acceptance and delivery each need a CPU core's worth of Python under load, and one process
has one GIL; like Postfix's smtpd and smtp, relay runs them as two processes sharing the
spool (SQLite in WAL mode serializes their writes). `DeliveryProcess` (in the listener
process) starts `python -m relay.outbound.process`, hands it the configuration on stdin,
nudges it through a pipe when a message was queued, and restarts it if it dies. The child
stops, finishing the attempts under way, when the pipe closes: on a clean shutdown, and
also when the parent is killed, so no delivery process outlives its relay.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys

from relay.config import Config

log = logging.getLogger("relay.delivery")

_RESTART_DELAY = 1.0


class DeliveryProcess:
    """The listener process's handle on the delivery process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._wake_w: int | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self._reloading = False

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.outbound.process", str(read_end),
            stdin=asyncio.subprocess.PIPE, pass_fds=(read_end,))
        os.close(read_end)
        self._wake_w = write_end
        self._proc.stdin.write(self.config.model_dump_json().encode())
        await self._proc.stdin.drain()
        self._proc.stdin.close()

    async def _supervise(self) -> None:
        while not self._stopping:
            code = await self._proc.wait()
            if self._stopping:
                return
            if self._reloading:                   # it finished its attempts: start the new one
                self._reloading = False
                await self._spawn()
                continue
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
        """Tell the delivery process that something was queued (coalesced, never blocks)."""
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


# --- the child ---------------------------------------------------------------------------

async def _serve(config: Config, wake_fd: int) -> None:
    from relay.app import load_signer
    from relay.clock import SystemClock
    from relay.feedback.intake import FeedbackIntake
    from relay.governor.governor import Governor
    from relay.governor.warmup import SPIKE_DAYS
    from relay.state.sqlite import day_of
    from relay.outbound import upstream
    from relay.outbound.retry import Backoff
    from relay.outbound.worker import Delivery
    from relay.spool.store import Spool

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    spool = Spool(config.spool.path)
    spool.start()
    routes = {name: upstream.build(name, route, config.server.hostname)
              for name, route in config.routes.items()}
    clock = SystemClock()
    first_send, volumes = await spool.governance_state(day_of(clock.now()) - SPIKE_DAYS - 1)
    governor = Governor(config.limits, clock, first_send, volumes)
    delivery = Delivery(config, spool, routes, load_signer(config), clock,
                        Backoff(config.spool.retry), governor, FeedbackIntake(config, spool, clock))

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
    delivery.start()
    await done.wait()
    await delivery.stop(timeout=30.0)
    spool.close()


def main() -> None:
    from relay.cli import setup_logging
    setup_logging()
    config = Config.model_validate_json(sys.stdin.buffer.read())
    try:
        import uvloop
        uvloop.run(_serve(config, int(sys.argv[1])))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(config, int(sys.argv[1])))


if __name__ == "__main__":
    main()

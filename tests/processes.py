"""`relay serve` as a real child process, for the scenarios that need signals (SIGKILL,
SIGTERM) or a restart: its own session (so the whole relay, listener and delivery
processes, can be killed at once) and its output in a log file."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, pgrp, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def gone(pid: int) -> bool:
    """The process has exited (a zombie has: its sockets and files are closed)."""
    fields = _stat(pid)
    return fields is None or fields[0] == "Z"


def _live() -> Iterator[tuple[int, list[str]]]:
    """Every process that has not exited, with its /proc stat fields."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z":
            yield int(entry.name), fields


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (Linux: read from /proc)."""
    return [pid for pid, fields in _live() if int(fields[1]) == parent]


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    return [pid for pid, fields in _live() if int(fields[2]) == pgid]


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class RelayProcess:
    def __init__(self, config_file: Path, port: int) -> None:
        self.config_file = config_file
        self.port = port
        self.log = config_file.parent / "relay.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RelayProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "serve", "-c", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.config_file.parent,
                start_new_session=True)
        wait_until(lambda: self.proc.poll() is not None or accepts_connections(self.port),
                   timeout=15, what="relay serve to listen")
        assert self.proc.poll() is None, f"relay serve exited:\n{self.tail()}"
        return self

    def kill(self) -> None:
        """SIGKILL the whole relay at once: listener and delivery processes."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def delivery_pid(self) -> int | None:
        """The delivery process (`python -m relay.outbound.process`), the listener's child."""
        for pid in children(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"relay.outbound.process" in argv:
                return pid
        return None

    def kill_listener(self) -> None:
        """SIGKILL the listener process alone; its delivery process is left to itself."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_leftovers(self) -> None:
        """SIGKILL whatever is left of this relay's process group, without signalling a
        group id that nothing of this relay holds any more (it may have been reused)."""
        if self.proc.poll() is None or group_members(self.proc.pid):
            self.cleanup()
        else:
            self.proc.wait(5)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL what is left after 15 s."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.cleanup()
        return self.proc.returncode

    def cleanup(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

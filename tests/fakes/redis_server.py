"""A real Redis for tests: Debian's `redis-server`, started on a unix socket in a temporary
directory, persisting nothing (`save ""`, no AOF), so each test gets an empty one.

    with RedisServer(tmp_path) as redis:       # started, PONG answered
        redis.url                              # "unix:///tmp/.../redis.sock", for relay
        redis.freeze() / redis.thaw()          # SIGSTOP / SIGCONT: slow, then back
        redis.kill()                           # SIGKILL: gone, its data with it
        redis.start()                          # again, empty (a restart after a crash)

`redis_server_path()` finds the program, or skips the test, unless RELAY_REQUIRE_TOOLS=1
(CI installs it: `.ci/run`), when a missing redis-server fails the test instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail("redis-server is not installed, and RELAY_REQUIRE_TOOLS=1 requires it "
                    "(Debian: apt-get install redis-server)")
    pytest.skip("redis-server is not installed")


class RedisServer:
    def __init__(self, directory: Path, program: str | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "redis.sock"
        self.program = program or redis_server_path()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.program, "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not self._pong():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)
        return self

    def _pong(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, frozen or not (a stopped process dies without running again)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

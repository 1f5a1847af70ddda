"""A real small filesystem for the spool: a tmpfs mounted for one test (root only; CI runs
as root). Without root, or where mounting is not allowed, the test is skipped with the
reason, unless RELAY_REQUIRE_TOOLS=1 (CI), where that is a failure."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest


def _unavailable(reason: str) -> None:
    if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"a tmpfs is needed and RELAY_REQUIRE_TOOLS=1: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def mounted(directory: Path, size: str):
    """A tmpfs of `size` (e.g. "16m") at `directory`, unmounted afterwards."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs for the spool needs root")
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(directory)], capture_output=True, text=True)
    if result.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(path: Path, chunk: int = 64 * 1024) -> int:
    """Write `path` until the filesystem is full; how many bytes it took."""
    written = 0
    with open(path, "wb", buffering=0) as out:
        block = b"\0" * chunk
        while True:
            try:
                written += out.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if chunk == 1:
                    return written
                chunk = max(chunk // 8, 1)
                block = b"\0" * chunk

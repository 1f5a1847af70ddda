"""The spool tests' spool: a started Spool in a temporary directory."""
from __future__ import annotations

import pytest

from relay.spool.store import Spool


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    yield spool
    spool.close()

"""The state tests' Redis: one real redis-server for a test module, on a unix socket."""
from __future__ import annotations

import pytest

from tests.fakes.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url

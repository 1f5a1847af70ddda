"""The Redis of each deployment (compose's redis service, the redis StatefulSet of
deploy/kubernetes) runs as its arguments say: a real redis-server started with them (on a
unix socket in a temporary directory) persists to an append-only file and refuses writes when
full rather than evicting relay's keys."""
import pytest
import redis

from tests.deploy.support import compose_services, kubernetes_pod, redis_server


def compose_arguments() -> list[str]:
    return compose_services()["redis"]["command"]


def kubernetes_arguments() -> list[str]:
    [redis] = kubernetes_pod("redis")["containers"]
    return redis["args"]


@pytest.mark.parametrize("arguments", [compose_arguments, kubernetes_arguments],
                         ids=["compose", "kubernetes"])
def test_redis_persists_and_never_evicts(arguments, tmp_path):
    """appendonly yes (its file appears in /data's stand-in), maxmemory set, policy
    noeviction: past maxmemory a write is refused, and the keys written before stay."""
    command = arguments()
    assert command[0] == "redis-server"
    with redis_server(command[1:], tmp_path) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) > 0
        client.set("relay:{d:acme.fr}:kept", "1")
        assert (tmp_path / "appendonlydir").is_dir()

        client.config_set("maxmemory", "1")      # full: what noeviction does then
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("relay:{d:acme.fr}:more", "2")
        assert client.get("relay:{d:acme.fr}:kept") == "1"

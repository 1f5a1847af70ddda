"""deploy/compose.yaml: a fleet of two relays built from the repository, sharing one Redis,
with Mailpit as their upstream and Prometheus and Grafana watching them; ports, mounts and
volumes agree with compose/relay.yaml, the Dockerfile and the Prometheus configuration, and
each relay has a spool of its own."""
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import (COMPOSE_FILE, COMPOSE_RELAY_YAML, DEPLOY, PROMETHEUS, ROOT,
                                  assert_durable_redis, compose_relays, load_yaml)

RELAYS = ["relay", "relay-b"]
SERVICES = ["relay", "relay-b", "redis", "dkim-key", "mailpit", "prometheus", "grafana"]


def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def service(name: str) -> dict:
    return compose()["services"][name]


def bind_mounts(name: str) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    mounts = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def named_volumes(name: str) -> dict[str, str]:
    """container path -> named volume of a service."""
    return {target: source for source, target, *_ in
            (volume.split(":") for volume in service(name).get("volumes", []))
            if not source.startswith(".")}


def published(name: str) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of a service's published ports."""
    ports = {}
    for spec in service(name).get("ports", []):
        *host, container = str(spec).split(":")
        address = host[0] if len(host) == 2 else "0.0.0.0"
        ports[int(container)] = (address, int(host[-1]))
    return ports


def test_the_services_of_the_issues():
    """Two relays (issue 12's fleet), their Redis, the one-shot DKIM key maker, Mailpit as
    upstream, Prometheus and Grafana."""
    assert set(compose()["services"]) == set(SERVICES)
    assert sorted(compose_relays()) == RELAYS
    assert service("mailpit")["image"].startswith("axllent/mailpit:")


def test_relays_are_built_from_the_repository():
    """The relay image builds with deploy/Dockerfile from the repository root."""
    for name in (*RELAYS, "dkim-key"):
        build = service(name)["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service(name)["image"] == service("relay")["image"]


@pytest.mark.parametrize("name", SERVICES)
def test_bind_mounts_exist(name):
    """Every file or directory compose mounts from the repository exists."""
    for target, source in bind_mounts(name).items():
        assert source.exists(), f"{name}: {source} (for {target})"


def test_ports_reach_the_listeners():
    """587 and 465 outside reach relay's STARTTLS and implicit-TLS listeners of relay.yaml,
    its HTTP listener is published, and metrics only on the host's loopback."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    by_tls = {listener["tls"]: listener for listener in config["server"]["listeners"]}
    ports = published("relay")
    assert ports[by_tls["starttls"]["port"]][1] == 587
    assert ports[by_tls["implicit"]["port"]][1] == 465
    assert all(listener["address"] == "0.0.0.0" for listener in by_tls.values())
    assert config["http"]["port"] in ports
    assert ports[config["metrics"]["port"]][0] == "127.0.0.1"


def test_the_second_relay_is_reachable_on_ports_of_its_own():
    """relay-b publishes both submission listeners and its metrics (on loopback only) on host
    ports no other service publishes."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    ports = published("relay-b")
    for listener in config["server"]["listeners"]:
        assert listener["port"] in ports, listener["name"]
    assert ports[config["metrics"]["port"]][0] == "127.0.0.1"
    host_ports = [port for name in SERVICES for _, port in published(name).values()]
    assert len(host_ports) == len(set(host_ports)), sorted(host_ports)


@pytest.mark.parametrize("name", RELAYS)
def test_relay_reads_the_compose_configuration(name):
    """compose/relay.yaml is mounted read-only where each relay service's -c points."""
    command = service(name)["command"]
    path = command[command.index("-c") + 1]
    assert bind_mounts(name)[path] == COMPOSE_RELAY_YAML
    assert any(v.endswith(f"{path}:ro") for v in service(name)["volumes"])


def test_dkim_key_is_made_before_the_relays_start_into_the_volume_they_read():
    """dkim-key writes the key compose/relay.yaml names, into the volume every relay mounts
    there (the nodes sign with one key: one DNS record), and the relays wait for it to
    finish."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    [key_path] = [Path(key["private_key"]) for domain in config["domains"].values()
                  for key in domain["dkim"]]
    directory = str(key_path.parent)
    volume = named_volumes("dkim-key")[directory]
    assert volume in compose()["volumes"]
    [script] = service("dkim-key")["command"]
    assert f"test -f {key_path}" in script and f"--directory {directory}" in script
    for name in RELAYS:
        assert named_volumes(name)[directory] == volume, name
        condition = service(name)["depends_on"]["dkim-key"]["condition"]
        assert condition == "service_completed_successfully", name


def test_each_relay_has_its_own_spool_volume():
    """Each relay's spool is a named volume (it survives `docker compose down` without -v)
    that no other service mounts: a spool has one writer, a message one node."""
    spool = load_yaml(COMPOSE_RELAY_YAML)["spool"]["path"]
    spools = {name: named_volumes(name)[spool] for name in RELAYS}
    assert all(volume in compose()["volumes"] for volume in spools.values())
    assert len(set(spools.values())) == len(RELAYS), spools
    for name in SERVICES:
        if name not in RELAYS:
            assert not set(spools.values()) & set(named_volumes(name).values()), name


@pytest.mark.parametrize("name", RELAYS)
def test_relay_has_time_to_drain(name):
    """docker stop waits longer than relay's 30 s drain before SIGKILL."""
    grace = service(name)["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > 30


def test_relay_upstream_is_the_mailpit_service():
    """relay's route points at the mailpit service on its SMTP port."""
    [route] = load_yaml(COMPOSE_RELAY_YAML)["routes"].values()
    assert route["host"] == "mailpit" and route["port"] == 1025


def test_the_relays_share_the_redis_service():
    """compose/relay.yaml keeps the governance state in Redis; every relay gets the variable
    its state.url_env names, all with the URL of the redis service on Redis' port, and waits
    for that service to answer PING."""
    state = load_yaml(COMPOSE_RELAY_YAML)["state"]
    assert state["backend"] == "redis"
    urls = {service(name)["environment"][state.get("url_env", "RELAY_REDIS_URL")]
            for name in RELAYS}
    [url] = urls
    parts = urlsplit(url)
    assert parts.scheme == "redis" and (parts.hostname, parts.port) == ("redis", 6379)
    for name in RELAYS:
        assert service(name)["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert "redis-cli" in service("redis")["healthcheck"]["test"]


def test_each_relay_has_a_node_name_of_its_own():
    """state.node is empty in the shared relay.yaml, so each node is named by its container's
    hostname: set, and different, for every relay service."""
    assert not load_yaml(COMPOSE_RELAY_YAML)["state"].get("node")
    names = [service(name).get("hostname") for name in RELAYS]
    assert all(names) and len(set(names)) == len(names), names


def test_redis_is_pinned_persists_and_keeps_its_data_in_a_volume():
    """An official image pinned by version, the append-only file on, no eviction, and /data
    (the image's working directory, where the file is written) on a named volume."""
    redis = service("redis")
    assert_durable_redis(redis["image"], redis["command"])
    assert named_volumes("redis")["/data"] in compose()["volumes"]
    assert "ports" not in redis                    # reached on the compose network only


def test_prometheus_loads_the_rules_beside_its_configuration():
    """prometheus.yml and rules.yml are mounted side by side, so `rule_files: [rules.yml]`
    resolves, and Prometheus reads that configuration."""
    mounts = bind_mounts("prometheus")
    config_path = next(a.split("=", 1)[1] for a in service("prometheus")["command"]
                       if a.startswith("--config.file="))
    assert mounts[config_path] == PROMETHEUS / "prometheus.yml"
    for rule_file in load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]:
        assert mounts[str(Path(config_path).parent / rule_file)] == PROMETHEUS / rule_file

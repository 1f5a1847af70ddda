"""deploy/compose.yaml: relay built from the repository, with Mailpit as its upstream and
Prometheus and Grafana watching it; ports, mounts and volumes agree with compose/relay.yaml,
the Dockerfile and the Prometheus configuration."""
from pathlib import Path

import pytest

from tests.deploy.support import (COMPOSE_FILE, COMPOSE_RELAY_YAML, DEPLOY, PROMETHEUS, ROOT,
                                  load_yaml)


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


def published(name: str) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of a service's published ports."""
    ports = {}
    for spec in service(name).get("ports", []):
        *host, container = str(spec).split(":")
        address = host[0] if len(host) == 2 else "0.0.0.0"
        ports[int(container)] = (address, int(host[-1]))
    return ports


def test_the_services_of_the_issue():
    """relay, its one-shot DKIM key maker, Mailpit as upstream, Prometheus and Grafana."""
    assert set(compose()["services"]) == {"relay", "dkim-key", "mailpit", "prometheus", "grafana"}
    assert service("mailpit")["image"].startswith("axllent/mailpit:")


def test_relay_is_built_from_the_repository():
    """The relay image builds with deploy/Dockerfile from the repository root."""
    for name in ("relay", "dkim-key"):
        build = service(name)["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service(name)["image"] == service("relay")["image"]


@pytest.mark.parametrize("name", ["relay", "dkim-key", "mailpit", "prometheus", "grafana"])
def test_bind_mounts_exist(name):
    """Every file or directory compose mounts from the repository exists."""
    for target, source in bind_mounts(name).items():
        assert source.exists(), f"{name}: {source} (for {target})"


def test_ports_reach_the_listeners():
    """587 and 465 outside reach the STARTTLS and implicit-TLS listeners of relay.yaml, the
    HTTP listener is published, and metrics only on the host's loopback."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    by_tls = {listener["tls"]: listener for listener in config["server"]["listeners"]}
    ports = published("relay")
    assert ports[by_tls["starttls"]["port"]][1] == 587
    assert ports[by_tls["implicit"]["port"]][1] == 465
    assert all(listener["address"] == "0.0.0.0" for listener in by_tls.values())
    assert config["http"]["port"] in ports
    assert ports[config["metrics"]["port"]][0] == "127.0.0.1"


def test_relay_reads_the_compose_configuration():
    """compose/relay.yaml is mounted read-only where the relay service's -c points."""
    command = service("relay")["command"]
    path = command[command.index("-c") + 1]
    assert bind_mounts("relay")[path] == COMPOSE_RELAY_YAML
    assert any(v.endswith(f"{path}:ro") for v in service("relay")["volumes"])


def test_dkim_key_is_made_before_relay_starts_into_the_volume_relay_reads():
    """dkim-key writes the key compose/relay.yaml names, into the volume relay mounts there,
    and relay waits for it to finish."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    [key_path] = [Path(key["private_key"]) for domain in config["domains"].values()
                  for key in domain["dkim"]]
    volumes = {}
    for name in ("relay", "dkim-key"):
        volumes[name] = {v.split(":")[1]: v.split(":")[0] for v in service(name)["volumes"]}
    directory = str(key_path.parent)
    assert volumes["relay"][directory] == volumes["dkim-key"][directory]
    assert volumes["relay"][directory] in compose()["volumes"]
    [script] = service("dkim-key")["command"]
    assert f"test -f {key_path}" in script and f"--directory {directory}" in script
    assert service("relay")["depends_on"]["dkim-key"]["condition"] == "service_completed_successfully"


def test_spool_is_a_named_volume():
    """The spool survives `docker compose down` (without -v)."""
    config = load_yaml(COMPOSE_RELAY_YAML)
    volumes = {v.split(":")[1]: v.split(":")[0] for v in service("relay")["volumes"]}
    assert volumes[config["spool"]["path"]] in compose()["volumes"]


def test_relay_has_time_to_drain():
    """docker stop waits longer than relay's 30 s drain before SIGKILL."""
    grace = service("relay")["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > 30


def test_relay_upstream_is_the_mailpit_service():
    """relay's route points at the mailpit service on its SMTP port."""
    [route] = load_yaml(COMPOSE_RELAY_YAML)["routes"].values()
    assert route["host"] == "mailpit" and route["port"] == 1025


def test_prometheus_loads_the_rules_beside_its_configuration():
    """prometheus.yml and rules.yml are mounted side by side, so `rule_files: [rules.yml]`
    resolves, and Prometheus reads that configuration."""
    mounts = bind_mounts("prometheus")
    config_path = next(a.split("=", 1)[1] for a in service("prometheus")["command"]
                       if a.startswith("--config.file="))
    assert mounts[config_path] == PROMETHEUS / "prometheus.yml"
    for rule_file in load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]:
        assert mounts[str(Path(config_path).parent / rule_file)] == PROMETHEUS / rule_file

"""deploy/kubernetes: the manifests are valid Kubernetes objects, kustomize renders them, and
they agree with each other and with the relay.yaml of the ConfigMap (ports, probes, secrets,
mounts): a StatefulSet of two relays, one spool claim per pod, sharing the Redis of redis.yaml
through the URL of its Service."""
import subprocess
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from relay.config import parse
from tests.deploy.support import (KUBERNETES, assert_durable_redis, kubernetes_documents,
                                  kubernetes_object, kubernetes_pod, load_yaml, tool)

# The API version the manifests are written for; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.30.0"

MANIFESTS = [(name, i, doc) for name, docs in kubernetes_documents().items()
             for i, doc in enumerate(docs)]


def relay_config_text() -> str:
    return kubernetes_object("ConfigMap", "relay-config")["data"]["relay.yaml"]


def relay_config_path_spool() -> str:
    return yaml.safe_load(relay_config_text())["spool"]["path"]


def relay_config(monkeypatch):
    """The ConfigMap's relay.yaml, parsed with the pod's variables: plain values as they are,
    secrets as placeholders."""
    for name, item in pod_env().items():
        monkeypatch.setenv(name, item.get("value", "x" * 32))
    return parse(relay_config_text(), KUBERNETES)


def container(name: str = "relay") -> dict:
    [only] = kubernetes_pod(name)["containers"]
    return only


def pod_env() -> dict[str, dict]:
    return {item["name"]: item for item in container()["env"]}


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(name: str) -> dict:
    return kubernetes_object("StatefulSet", name)["spec"]["template"]["metadata"]["labels"]


def container_port(name: str) -> int:
    return next(p["containerPort"] for p in container()["ports"] if p["name"] == name)


@pytest.mark.parametrize("name, index, doc", MANIFESTS,
                         ids=[f"{n}[{i}]:{d['kind']}" for n, i, d in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(name, index, doc):
    """Each object validates, unknown fields included (strict), against Kubernetes' schema."""
    assert KUBERNETES_VERSION in kubernetes_validate.utils.all_versions(), \
        f"this kubernetes-validate has no schemas for Kubernetes {KUBERNETES_VERSION}"
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    """kustomization.yaml applies every manifest; never the placeholder Secrets, which would
    overwrite real ones."""
    listed = set(load_yaml(KUBERNETES / "kustomization.yaml")["resources"])
    assert listed == set(kubernetes_documents()) - {"secret.example.yaml"}


def test_kustomize_renders_valid_objects():
    """`kubectl kustomize deploy/kubernetes` renders, and what it renders validates too: the
    relay and Redis StatefulSets (no Deployment, no stand-alone claim: the claims come from
    the StatefulSets' templates), their Services, the budget and Redis' NetworkPolicy."""
    kubectl = tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in rendered}
    assert kinds == {"Namespace", "ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget",
                     "NetworkPolicy"}
    assert {doc["metadata"]["name"] for doc in rendered if doc["kind"] == "StatefulSet"} == \
        {"relay", "redis"}
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "relay"


def test_configmap_holds_a_valid_relay_configuration(monkeypatch):
    """The ConfigMap's relay.yaml passes relay's own validation, given the relay pod's
    variables; listeners are unprivileged and metrics listen on the pod address."""
    config = relay_config(monkeypatch)
    assert all(listener.port > 1024 for listener in config.server.listeners)
    assert config.metrics.address == "0.0.0.0"
    assert config.logging.format == "json"
    assert str(config.spool.path) == "/var/lib/relay"


def test_two_relays_each_with_a_spool_claim_of_its_own():
    """Two replicas; the spool is mounted from a volumeClaimTemplate (spool-relay-0,
    spool-relay-1: one ReadWriteOnce claim per pod), never from a claim or volume the pods
    share; a StatefulSet replaces a pod only after it has stopped, so each spool has one
    writer. The removed pods' claims are kept when scaling down: they may hold mail."""
    spec = kubernetes_object("StatefulSet", "relay")["spec"]
    assert spec["replicas"] == 2
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    spool = mounts[str(relay_config_path_spool())]
    assert spool not in {v["name"] for v in spec["template"]["spec"]["volumes"]}
    [template] = [t for t in spec["volumeClaimTemplates"] if t["metadata"]["name"] == spool]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    assert not [d for docs in kubernetes_documents().values() for d in docs
                if d["kind"] in ("PersistentVolumeClaim", "Deployment")]


def test_statefulset_is_governed_by_a_headless_service_of_its_pods():
    """serviceName names a headless Service that selects the relay pods, so each has a
    stable name (relay-0.relay-headless...)."""
    spec = kubernetes_object("StatefulSet", "relay")["spec"]
    governing = kubernetes_object("Service", spec["serviceName"])["spec"]
    assert governing["clusterIP"] == "None"
    assert selects(governing["selector"], pod_labels("relay"))
    assert selects(spec["selector"]["matchLabels"], pod_labels("relay"))


def test_every_service_selects_the_pods_of_a_statefulset():
    """relay, relay-metrics and relay-headless reach the relay pods, redis the Redis pod."""
    services = [d for docs in kubernetes_documents().values() for d in docs if d["kind"] == "Service"]
    reached = {}
    for service in services:
        [pods] = [name for name in ("relay", "redis")
                  if selects(service["spec"]["selector"], pod_labels(name))]
        reached[service["metadata"]["name"]] = pods
    assert reached == {"relay": "relay", "relay-metrics": "relay", "relay-headless": "relay",
                       "redis": "redis"}


def test_disruption_budget_keeps_a_relay_up_and_lets_drains_proceed():
    """The budget selects the relay pods (not Redis), and lets one of the two go at a time:
    never none (a drain would hang), never both (no relay would take mail)."""
    budget = kubernetes_object("PodDisruptionBudget", "relay")["spec"]
    replicas = kubernetes_object("StatefulSet", "relay")["spec"]["replicas"]
    assert selects(budget["selector"]["matchLabels"], pod_labels("relay"))
    assert not selects(budget["selector"]["matchLabels"], pod_labels("redis"))
    allowed = budget["maxUnavailable"] if "maxUnavailable" in budget \
        else replicas - budget["minAvailable"]
    assert 1 <= allowed < replicas


def test_relays_share_the_redis_of_the_manifests(monkeypatch):
    """relay.yaml keeps the governance state in Redis and leaves state.node empty (each node
    is named by its pod's hostname, relay-0, relay-1); the variable its url_env names is a
    redis:// URL whose host is a Service that selects the Redis pod, on the port that
    reaches Redis' container port."""
    config = relay_config(monkeypatch)
    assert config.state.backend == "redis"
    assert config.state.node == ""
    url = urlsplit(pod_env()[config.state.url_env]["value"])
    assert url.scheme == "redis"
    redis_service = kubernetes_object("Service", url.hostname)["spec"]
    assert selects(redis_service["selector"], pod_labels("redis"))
    [port] = [p for p in redis_service["ports"] if p["port"] == (url.port or 6379)]
    target = {p["name"]: p["containerPort"] for p in container("redis")["ports"]}
    assert target.get(port["targetPort"], port["targetPort"]) == 6379


def test_redis_is_pinned_persists_and_keeps_its_data_on_a_claim():
    """Redis: one pod of an official image pinned by version, the append-only file on and no
    eviction, /data on a claim of its own, and a headless governing Service."""
    spec = kubernetes_object("StatefulSet", "redis")["spec"]
    assert spec["replicas"] == 1
    redis = container("redis")
    assert_durable_redis(redis["image"], redis["args"])
    data = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}["/data"]
    assert data in {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    assert kubernetes_object("Service", spec["serviceName"])["spec"]["clusterIP"] == "None"


def test_only_relay_pods_reach_redis():
    """Redis has no password: its NetworkPolicy admits the relay pods, on Redis' port only."""
    policy = kubernetes_object("NetworkPolicy", "redis")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels("redis"))
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    assert selects(source["podSelector"]["matchLabels"], pod_labels("relay"))
    assert [p["port"] for p in rule["ports"]] == [6379]


def test_probes_hit_the_metrics_listener(monkeypatch):
    """Readiness GETs /readyz and liveness /healthz on the port relay.yaml gives metrics."""
    port = relay_config(monkeypatch).metrics.port
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container_port(c[probe]["httpGet"]["port"]) == port, probe
    annotations = kubernetes_object("Service", "relay-metrics")["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_services_map_the_standard_ports_to_the_listeners(monkeypatch):
    """587 reaches the STARTTLS listener, 465 the implicit-TLS one, 8080 the HTTP listener."""
    config = relay_config(monkeypatch)
    by_tls = {listener.tls: listener.port for listener in config.server.listeners}
    service = {p["port"]: p["targetPort"] for p in kubernetes_object("Service", "relay")["spec"]["ports"]}
    assert container_port(service[587]) == by_tls["starttls"]
    assert container_port(service[465]) == by_tls["implicit"]
    assert container_port(service[8080]) == config.http.port


@pytest.mark.parametrize("name", ["relay", "redis"])
def test_pod_is_locked_down(name):
    """Non-root, read-only root filesystem, no capabilities, no privilege escalation, a
    RuntimeDefault seccomp profile (the namespace enforces the restricted standard),
    resources set, and time to stop on SIGTERM (relay drains for up to 30 s)."""
    pod = kubernetes_pod(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container(name)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert {"requests", "limits"} <= set(container(name)["resources"])
    assert pod["automountServiceAccountToken"] is False
    if name == "relay":
        assert pod["terminationGracePeriodSeconds"] > 30


def test_config_path_is_the_mounted_configmap():
    """The container's -c argument is the ConfigMap's relay.yaml where it is mounted."""
    args = container()["args"]
    path = args[args.index("-c") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in kubernetes_pod("relay")["volumes"]}
    name = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "relay-config")
    assert path == f"{mounts[name]}/relay.yaml"


def test_secrets_reach_relay_as_its_config_names_them(monkeypatch):
    """Every *_env key of relay.yaml is a variable of the relay pod: the secrets filled from
    a Secret of secret.example.yaml, the Redis URL (no secret in-cluster) a plain value; and
    every key file relay.yaml names is a file of a mounted Secret."""
    config = relay_config(monkeypatch)
    secret = {route.password_env for route in config.routes.values() if route.password_env}
    secret |= {hook.token_env for hook in config.feedback.webhooks.values()}
    if config.feedback.unsubscribe:
        secret.add(config.feedback.unsubscribe.secret_env)
    env = pod_env()
    assert secret | {config.state.url_env} <= set(env)
    secrets = {doc["metadata"]["name"]: doc for doc in kubernetes_documents()["secret.example.yaml"]}
    for name in secret:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"], name

    volumes = {v["name"]: v for v in kubernetes_pod("relay")["volumes"]}
    mounted = {}                                   # directory -> the Secret's file names
    for mount in container()["volumeMounts"]:
        secret_volume = volumes.get(mount["name"], {}).get("secret")
        if secret_volume:
            mounted[mount["mountPath"]] = set(secrets[secret_volume["secretName"]]["stringData"])
    files = [key.private_key for domain in config.domains.values() for key in domain.dkim]
    files += [config.server.tls.certificate, config.server.tls.private_key]
    for path in files:
        assert path.name in mounted.get(str(path.parent), set()), f"{path} is in no mounted Secret"

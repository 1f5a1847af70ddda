"""deploy/kubernetes: the manifests are valid Kubernetes objects, kustomize renders them, and
they agree with each other and with the relay.yaml of the ConfigMap (ports, probes, secrets,
mounts, the single spool writer)."""
import subprocess

import kubernetes_validate
import pytest
import yaml

from relay.config import parse
from tests.deploy.support import (KUBERNETES, kubernetes_documents, kubernetes_object, load_yaml,
                                  tool)

# The API version the manifests are written for; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.30.0"

MANIFESTS = [(name, i, doc) for name, docs in kubernetes_documents().items()
             for i, doc in enumerate(docs)]


def relay_config_text() -> str:
    return kubernetes_object("ConfigMap", "relay-config")["data"]["relay.yaml"]


def relay_config(monkeypatch):
    for name in deployment_env():
        monkeypatch.setenv(name, "x" * 32)
    return parse(relay_config_text(), KUBERNETES)


def container() -> dict:
    [relay] = kubernetes_object("Deployment", "relay")["spec"]["template"]["spec"]["containers"]
    return relay


def deployment_env() -> dict[str, dict]:
    return {item["name"]: item for item in container()["env"]}


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
    """`kubectl kustomize deploy/kubernetes` renders, and what it renders validates too."""
    kubectl = tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in rendered}
    assert {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
            "PodDisruptionBudget"} <= kinds
    assert "Secret" not in kinds
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "relay"


def test_configmap_holds_a_valid_relay_configuration(monkeypatch):
    """The ConfigMap's relay.yaml passes relay's own validation, given the Deployment's
    variables; listeners are unprivileged and metrics listen on the pod address."""
    config = relay_config(monkeypatch)
    assert all(listener.port > 1024 for listener in config.server.listeners)
    assert config.metrics.address == "0.0.0.0"
    assert config.logging.format == "json"
    assert str(config.spool.path) == "/var/lib/relay"


def test_single_spool_writer():
    """One replica, replaced by Recreate: the SQLite spool on the PVC has one writer."""
    spec = kubernetes_object("Deployment", "relay")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    claim = volumes[mounts["/var/lib/relay"]]["persistentVolumeClaim"]["claimName"]
    assert kubernetes_object("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]


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


def test_pod_is_locked_down():
    """Non-root, read-only root filesystem, no capabilities, no privilege escalation, a
    RuntimeDefault seccomp profile, resources set, and time to drain on SIGTERM."""
    pod = kubernetes_object("Deployment", "relay")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert {"requests", "limits"} <= set(container()["resources"])
    assert pod["terminationGracePeriodSeconds"] > 30        # relay drains for up to 30 s


def test_config_path_is_the_mounted_configmap():
    """The container's -c argument is the ConfigMap's relay.yaml where it is mounted."""
    args = container()["args"]
    path = args[args.index("-c") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in kubernetes_object("Deployment", "relay")["spec"]["template"]["spec"]["volumes"]}
    name = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "relay-config")
    assert path == f"{mounts[name]}/relay.yaml"


def test_secrets_reach_relay_as_its_config_names_them(monkeypatch):
    """Every *_env key of relay.yaml is a variable the Deployment fills from a Secret of
    secret.example.yaml, and every key file relay.yaml names is a file of a mounted Secret."""
    config = relay_config(monkeypatch)
    wanted = {route.password_env for route in config.routes.values() if route.password_env}
    wanted |= {hook.token_env for hook in config.feedback.webhooks.values()}
    if config.feedback.unsubscribe:
        wanted.add(config.feedback.unsubscribe.secret_env)
    env = deployment_env()
    assert wanted <= set(env)
    secrets = {doc["metadata"]["name"]: doc for doc in kubernetes_documents()["secret.example.yaml"]}
    for name in wanted:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"], name

    volumes = {v["name"]: v for v in kubernetes_object("Deployment", "relay")["spec"]["template"]["spec"]["volumes"]}
    mounted = {}                                   # directory -> the Secret's file names
    for mount in container()["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret:
            mounted[mount["mountPath"]] = set(secrets[secret["secretName"]]["stringData"])
    files = [key.private_key for domain in config.domains.values() for key in domain.dkim]
    files += [config.server.tls.certificate, config.server.tls.private_key]
    for path in files:
        assert path.name in mounted.get(str(path.parent), set()), f"{path} is in no mounted Secret"

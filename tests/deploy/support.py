"""What the tests of deploy/ share: where things are, external tools, PromQL metric names."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_RELAY_YAML = DEPLOY / "compose" / "relay.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "relay.json"


def tool(name: str, required_in_ci: bool = False) -> str:
    """The path of an external program, or skip the test without it. With
    RELAY_REQUIRE_TOOLS=1 (CI installs them) a missing required tool fails instead."""
    path = shutil.which(name)
    if path:
        return path
    if required_in_ci and os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is not installed, and RELAY_REQUIRE_TOOLS=1 requires it "
                    f"(Debian: apt-get install prometheus, which ships promtool)")
    pytest.skip(f"{name} is not installed")


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_METRIC = re.compile(r"(?<![\w:.$])relay_[a-zA-Z0-9_]*(?![\w(])")


def metric_names(expr: str) -> set[str]:
    """The relay_* series an expression selects: PromQL tokens starting with `relay_`,
    outside quoted label values."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def kubernetes_documents() -> dict[str, list[dict]]:
    """Every manifest under deploy/kubernetes (kustomization.yaml aside), by file name."""
    return {path.name: load_all_yaml(path) for path in sorted(KUBERNETES.glob("*.yaml"))
            if path.name != "kustomization.yaml"}


def kubernetes_object(kind: str, name: str) -> dict:
    for documents in kubernetes_documents().values():
        for doc in documents:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} named {name} under {KUBERNETES}")

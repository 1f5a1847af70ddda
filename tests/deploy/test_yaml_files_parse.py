"""Every YAML and JSON file under deploy/ parses."""
import json

import pytest
import yaml

from tests.deploy.support import DEPLOY

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
JSON_FILES = sorted(DEPLOY.rglob("*.json"))


def test_deploy_has_its_files():
    """The pieces issues 6 and 12 ask for are all there."""
    for name in ("Dockerfile", "compose.yaml", "compose/relay.yaml", "kubernetes/kustomization.yaml",
                 "kubernetes/statefulset.yaml", "kubernetes/redis.yaml",
                 "systemd/relay.service", "prometheus/prometheus.yml", "prometheus/rules.yml",
                 "prometheus/rules_test.yml", "grafana/dashboards/relay.json"):
        assert (DEPLOY / name).is_file(), name


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    """Each YAML file is one or more well-formed documents, none of them empty."""
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(doc, dict) for doc in documents), path


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path):
    """Each JSON file (the Grafana dashboard) is a well-formed object."""
    assert isinstance(json.loads(path.read_text()), dict)

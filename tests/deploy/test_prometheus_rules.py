"""deploy/prometheus: promtool accepts the configuration and the rules, the rules' unit tests
pass and show every alert firing, every alert is labelled and explained, the alerts the issues
ask for (and the README names) exist, and every series they read is one relay exposes."""
import re
import subprocess

import pytest

from relay.metrics import series_names
from tests.deploy.support import (COMPOSE_RELAY_YAML, PROMETHEUS, ROOT, compose_relays,
                                  load_yaml, metric_names, tool)

RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules_test.yml"
PROMETHEUS_YML = PROMETHEUS / "prometheus.yml"


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for group in load_yaml(RULES)["groups"]
            for rule in group["rules"] if "alert" in rule}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool", required_in_ci=True), *args], capture_output=True,
                          text=True, timeout=120, cwd=PROMETHEUS)


def test_promtool_checks_the_rules():
    """`promtool check rules rules.yml` passes."""
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    """`promtool test rules rules_test.yml` passes: each alert fires where it must, with the
    labels and annotations written there, and stays quiet where it must."""
    result = promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_scrape_configuration():
    """`promtool check config prometheus.yml` passes (it loads rules.yml too)."""
    result = promtool("check", "config", PROMETHEUS_YML.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_the_unit_tests_and_one_stays_quiet():
    """rules_test.yml has a firing case for every alert of rules.yml, and not-firing cases."""
    cases = [case for test in load_yaml(RULES_TEST)["tests"] for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    assert fired == set(alerts())
    assert any(case.get("exp_alerts") == [] for case in cases)


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_is_labelled_and_explained(name):
    """Every alert has a severity and a summary and description; alerts per domain, route or
    scope name it in both."""
    rule = alerts()[name]
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    for label in ("domain", "route", "scope"):
        if f"by ({label}" in rule["expr"] or f", {label})" in rule["expr"]:
            assert f"$labels.{label}" in annotations["summary"], (name, label)
            assert f"$labels.{label}" in annotations["description"], (name, label)


def test_the_alerts_of_the_issue_exist():
    """Complaint rate over 0.08% (warning) and 0.10% (critical) and bounce rate over 2%, per
    domain; a growing queue; an old message; delivery failures; relay down; a paused domain;
    delivery process restarts."""
    rules = alerts()

    def having(metric: str, threshold: str | None = None) -> list[dict]:
        return [r for r in rules.values() if metric in metric_names(r["expr"])
                and (threshold is None or f"> {threshold}" in r["expr"])]

    [near] = having("relay_domain_complaint_rate", "0.0008")
    [over] = having("relay_domain_complaint_rate", "0.001")
    assert (near["labels"]["severity"], over["labels"]["severity"]) == ("warning", "critical")
    assert having("relay_domain_bounce_rate", "0.02")
    assert any("deriv(" in r["expr"] or "delta(" in r["expr"] for r in having("relay_queue_messages"))
    assert having("relay_queue_oldest_seconds", "3600")
    assert any("bounced|expired" in r["expr"] for r in having("relay_deliveries_total"))
    assert rules["RelayDown"]["expr"].replace(" ", "") == 'up{job="relay"}==0'
    assert rules["RelayDown"]["for"] == "2m"
    assert any("== 1" in r["expr"] for r in having("relay_domain_paused"))
    assert having("relay_delivery_process_restarts_total")


def seconds(duration: str) -> int:
    """A Prometheus duration of one unit ("90m", "2h") in seconds."""
    number, unit = re.fullmatch(r"(\d+)([smhd])", duration).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def test_the_reputation_watch_alerts_exist():
    """A zone listing a watched name; a zone refusing our queries for an hour or more (one
    refused round is no alert); no blocklist round for hours; a domain whose DMARC reports
    count over 5% failing messages, on some volume."""
    rules = alerts()
    listed = rules["RelayBlocklisted"]["expr"]
    assert metric_names(listed) == {"relay_blocklist_listed"} and "> 0" in listed
    refused = rules["RelayBlocklistQueriesRefused"]
    assert metric_names(refused["expr"]) == {"relay_blocklist_refused"}
    assert "== 1" in refused["expr"]
    assert seconds(refused["for"]) >= 3600
    stale = rules["RelayBlocklistCheckStale"]["expr"]
    assert "relay_blocklist_last_check_timestamp_seconds" in metric_names(stale)
    assert "time()" in stale
    dmarc = rules["RelayDmarcFailing"]["expr"]
    assert metric_names(dmarc) == {"relay_dmarc_messages"}
    assert 'result="failing"' in dmarc and "> 0.05" in dmarc


def test_the_alerts_the_readme_names_exist():
    """Every `Relay...` alert name README.md quotes is an alert of rules.yml."""
    named = set(re.findall(r"`(Relay[A-Z]\w*)`", (ROOT / "README.md").read_text()))
    assert named, "no alert names found in README.md: the extraction is broken"
    assert named <= set(alerts()), sorted(named - set(alerts()))


def test_rules_and_their_tests_read_only_series_relay_exposes():
    """Every relay_* name in an expression of rules.yml or a series of rules_test.yml is in
    relay.metrics.series_names()."""
    used = set()
    for rule in alerts().values():
        used |= metric_names(rule["expr"])
    for test in load_yaml(RULES_TEST)["tests"]:
        for series in test["input_series"]:
            used |= metric_names(series["series"].split("{")[0])
    assert used, "no relay_* names found: the extraction is broken"
    assert used <= series_names(), sorted(used - series_names())


def test_prometheus_scrapes_every_relay_where_compose_runs_it():
    """The scrape job is called relay (RelayDown and the dashboard select it) and targets
    each relay service of the compose fleet, and nothing else, on the metrics port of
    compose/relay.yaml; the rules are loaded."""
    config = load_yaml(PROMETHEUS_YML)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "relay"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    metrics_port = load_yaml(COMPOSE_RELAY_YAML)["metrics"]["port"]
    targets = [target for static in job["static_configs"] for target in static["targets"]]
    assert sorted(targets) == sorted(f"{name}:{metrics_port}" for name in compose_relays())
    assert len(compose_relays()) == 2
    assert RULES.name in config["rule_files"]

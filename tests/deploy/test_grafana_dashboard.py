"""deploy/grafana: the dashboard has the panels issue 6 and the reputation watch list,
queries only series relay exposes (and Prometheus's `up`) in valid PromQL, draws the
reputation thresholds, lays its panels out without overlap, and is provisioned with its
datasource in compose."""
import json
import re
import subprocess

import pytest
import yaml

from relay.metrics import series_names
from tests.deploy.support import COMPOSE_FILE, DASHBOARD, DEPLOY, load_yaml, metric_names, tool

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    found = [t["expr"] for p in panels() for t in p["targets"]]
    found += [v["query"]["query"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return found


def panel(title: str) -> dict:
    [match] = [p for p in panels() if p["title"] == title]
    return match


# title -> a series its queries must read (the list of panels)
REQUIRED_PANELS = {
    "Throughput: messages received by stream": "relay_messages_received_total",
    "Queue by state": "relay_queue_messages",
    "Oldest message age": "relay_queue_oldest_seconds",
    "Deliveries by result": "relay_deliveries_total",
    "Delivery duration (quantiles)": "relay_delivery_duration_seconds_bucket",
    "Complaint rate per domain": "relay_domain_complaint_rate",
    "Bounce rate per domain": "relay_domain_bounce_rate",
    "Warm-up day per domain": "relay_domain_warmup_day",
    "Governor deferrals by reason": "relay_governor_deferrals_total",
    "Rejections by reason": "relay_messages_rejected_total",
    "Feedback events": "relay_feedback_events_total",
    "Suppressions by reason": "relay_suppressions",
    "Paused domains": "relay_domain_paused",
    # the reputation watch
    "Blocklist listings by zone": "relay_blocklist_listed",
    "Zones refusing our queries over time": "relay_blocklist_refused",
    "DMARC messages per domain": "relay_dmarc_messages",
    "DMARC failing share per domain": "relay_dmarc_messages",
}


@pytest.mark.parametrize("title", sorted(REQUIRED_PANELS))
def test_dashboard_has_the_panel(title):
    """Each panel of the issues' lists is there and reads its series."""
    [match] = [p for p in panels() if p["title"] == title and p["type"] != "stat"]
    read = set().union(*(metric_names(t["expr"]) for t in match["targets"]))
    assert REQUIRED_PANELS[title] in read


def test_series_by_label():
    """Throughput is split by stream, the queue by state, deliveries by result, and the
    reputation panels by domain."""
    for title, label in (("Throughput: messages received by stream", "stream"),
                         ("Queue by state", "state"), ("Deliveries by result", "result"),
                         ("Complaint rate per domain", "domain"), ("Bounce rate per domain", "domain"),
                         ("Warm-up day per domain", "domain"),
                         ("Governor deferrals by reason", "reason"),
                         ("Rejections by reason", "reason"),
                         ("Blocklist listings by zone", "zone"),
                         ("Blocklist listings by zone", "kind"),
                         ("Zones refusing our queries over time", "zone"),
                         ("DMARC messages per domain", "domain"),
                         ("DMARC messages per domain", "result"),
                         ("DMARC failing share per domain", "domain")):
        [target] = panel(title)["targets"]
        assert re.search(rf"by \([^)]*\b{label}\b", target["expr"]), title
        assert "{{" + label + "}}" in target["legendFormat"], title


def test_duration_panel_shows_quantiles_of_the_histogram():
    """Delivery duration is histogram_quantile over the buckets, at several quantiles."""
    targets = panel("Delivery duration (quantiles)")["targets"]
    quantiles = {re.match(r"histogram_quantile\(([0-9.]+),", t["expr"]).group(1) for t in targets}
    assert len(quantiles) >= 3
    assert all("by (le)" in t["expr"] for t in targets)


@pytest.mark.parametrize("title, limits", [("Complaint rate per domain", [0.001, 0.003]),
                                           ("Bounce rate per domain", [0.02, 0.05]),
                                           ("DMARC failing share per domain", [0.05])])
def test_reputation_panels_draw_the_limits(title, limits):
    """Complaint rates show lines at 0.10% and 0.30%, bounce rates at 2% and 5%, DMARC
    failing shares at RelayDmarcFailing's 5%, as percentages."""
    defaults = panel(title)["fieldConfig"]["defaults"]
    steps = [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]
    assert steps == limits
    assert defaults["custom"]["thresholdsStyle"]["mode"].startswith("line")
    assert defaults["unit"] == "percentunit"


def test_reputation_watch_row():
    """A "Reputation watch" row holds the blocklist and DMARC panels (every panel between it
    and the next row reads a relay_blocklist_* or relay_dmarc_* series, all of those are
    there, and together they read each of the four); the DMARC panels follow the $domain
    variable."""
    rows = sorted((p["gridPos"]["y"], p["title"]) for p in dashboard()["panels"]
                  if p["type"] == "row")
    [(top, _)] = [(y, title) for y, title in rows if title == "Reputation watch"]
    bottom = min([y for y, _ in rows if y > top], default=float("inf"))
    inside = [p for p in panels() if top < p["gridPos"]["y"] < bottom]
    watch = [p for p in panels() if any(m.startswith(("relay_blocklist_", "relay_dmarc_"))
                                        for t in p["targets"] for m in metric_names(t["expr"]))]
    assert inside and sorted(p["id"] for p in inside) == sorted(p["id"] for p in watch)
    read = {m for p in inside for t in p["targets"] for m in metric_names(t["expr"])}
    assert read == {"relay_blocklist_listed", "relay_blocklist_refused",
                    "relay_blocklist_last_check_timestamp_seconds", "relay_dmarc_messages"}
    for expr in (t["expr"] for p in watch for t in p["targets"]):
        if "relay_dmarc_messages" in metric_names(expr):
            assert expr.count('domain=~"$domain"') == expr.count("relay_dmarc_messages"), expr


def test_queries_read_only_series_relay_exposes():
    """Every relay_* name in a query or variable is in relay.metrics.series_names(); the
    only other metric is `up`."""
    used = set().union(*(metric_names(e) for e in exprs()))
    assert used <= series_names(), sorted(used - series_names())
    others = set()
    for expr in exprs():
        bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', "", expr)       # matchers, ranges
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)           # grouping labels
        bare = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", bare)      # a variable's label
        others |= {name for name in re.findall(r"[a-zA-Z_:][\w:]*", bare)
                   if not name.startswith("relay_")}
    functions = {"sum", "max", "min", "count", "rate", "increase", "histogram_quantile", "or",
                 "and", "vector", "time", "label_values"}
    assert others - functions <= {"up"}, others - functions


def test_queries_are_valid_promql(tmp_path):
    """promtool parses every query, with Grafana's variables replaced by values."""
    rules = [{"record": f"dashboard:query_{i}:check",
              "expr": re.sub(r"\$\{?(instance|domain)\}?", ".*",
                             expr.replace("$__rate_interval", "5m"))}
             for i, expr in enumerate(exprs()) if not expr.startswith("label_values(")]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool("promtool", required_in_ci=True), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_panel_uses_the_datasource_variable():
    """Panels and queries use the DS_PROMETHEUS datasource variable, so the dashboard works
    provisioned in compose and imported elsewhere."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for p in panels():
        assert p["datasource"] == DATASOURCE, p["title"]
        assert all(t["datasource"] == DATASOURCE for t in p["targets"]), p["title"]


def test_dashboard_layout_is_sound():
    """Unique panel ids, a grid position on the 24-column grid for each, no two panels on the
    same cell, a recent schema."""
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for p in d["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        for cell in ((x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                     for y in range(pos["y"], pos["y"] + pos["h"])):
            assert cell not in taken, (p["title"], taken[cell])
            taken[cell] = p["title"]
    assert d["schemaVersion"] >= 36 and d["uid"] == "relay"


def test_compose_provisions_the_datasource_and_the_dashboard():
    """Grafana in compose gets the Prometheus datasource and loads the dashboard from the
    directory the provider names."""
    grafana = load_yaml(COMPOSE_FILE)["services"]["grafana"]
    mounts = {target: (DEPLOY / source).resolve() for source, target, *_ in
              (v.split(":") for v in grafana["volumes"]) if source.startswith(".")}
    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = load_yaml(provisioning / "dashboards" / "relay.yaml")["providers"]
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name) == DASHBOARD

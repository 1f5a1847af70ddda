"""relay.metrics: the counters a process snapshots and the listener merges, the zero series
`prime` creates, the documented names, and the gauges read from the spool at scrape time.

Counters and histograms are tested on private registries (the module's REGISTRY is shared
with every in-process relay of the session); `prime` is checked on the real REGISTRY with
listener and route names no other test uses, removed afterwards.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relay import config as config_module
from relay import metrics
from relay.checks.spf import SpfResult
from relay.feedback.events import FeedbackKind
from relay.governor.governor import HoldReason
from relay.compose import prime_metrics as prime
from relay.metrics import Merged, documented, snapshot
from relay.spool.gauges import SpoolCollector
from relay.model import QueuedMessage, Recipient
from relay.replies import Refusal
from relay.spool.store import Spool
from relay.state import tables
from relay.state.sqlite import SqliteState
from relay.state.suppressions import SuppressionReason
from tests.conftest import base_config
from relay.watch.aggregate import AggregateReport, Row
from relay.watch.watch import BlocklistWatch
from tests.fakes.clock import FakeClock
from tests.fakes.dns_server import ZoneResolver

README = Path(__file__).resolve().parents[2] / "README.md"
DAY = 86400
TODAY = 20_000
T = TODAY * DAY + 10 * 3600          # 10:00 UTC


def run(coro):
    return asyncio.run(coro)


def samples(collector) -> dict[tuple[str, frozenset], float]:
    """Every sample a registry or collector yields, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in collector.collect() for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


# --- snapshot and Merged -----------------------------------------------------------------------

@pytest.fixture
def registry():
    """A private registry: a counter with a label, a histogram with two buckets, a gauge."""
    registry = CollectorRegistry(auto_describe=True)
    things = Counter("relay_test_things", "Things done, by kind", ["kind"], registry=registry)
    seconds = Histogram("relay_test_seconds", "Time of a thing, by route", ["route"],
                        buckets=(0.1, 1), registry=registry)
    Gauge("relay_test_level", "A level", registry=registry).set(7)
    things.labels("a").inc(2)
    seconds.labels("r1").observe(0.05)
    seconds.labels("r1").observe(0.5)
    return registry


def bucket(route: str, le: str, v: float):
    return ("relay_test_seconds_bucket", {"route": route, "le": le}, v)


def test_snapshot_lists_every_sample_of_the_registry(registry):
    """(name, labels, value) for each sample, counters as `_total`, histogram buckets, count
    and sum, and no `_created` (a creation time cannot be summed across processes)."""
    assert snapshot(registry) == [
        ("relay_test_things_total", {"kind": "a"}, 2.0),
        bucket("r1", "0.1", 1.0), bucket("r1", "1.0", 2.0), bucket("r1", "+Inf", 2.0),
        ("relay_test_seconds_count", {"route": "r1"}, 2.0),
        ("relay_test_seconds_sum", {"route": "r1"}, 0.55),
        ("relay_test_level", {}, 7.0),
    ]


def test_a_snapshot_survives_the_json_trip_between_processes(registry):
    """The delivery process sends its snapshot as a JSON line; read back, it merges the same."""
    sent = json.loads(json.dumps(snapshot(registry)))
    assert samples(Merged(lambda: sent, registry)) == {
        key: 2 * v for key, v in samples(registry).items()}


def test_without_others_the_families_are_the_registrys_own(registry):
    """An empty `others` leaves names, types, help and samples as the registry has them."""
    merged = list(Merged(lambda: [], registry).collect())
    assert merged == list(registry.collect())
    assert [(f.name, f.type, f.documentation) for f in merged] == [
        ("relay_test_things", "counter", "Things done, by kind"),
        ("relay_test_seconds", "histogram", "Time of a thing, by route"),
        ("relay_test_level", "gauge", "A level")]


def test_samples_with_the_same_name_and_labels_are_added(registry):
    """Another process's count for a label set the registry has is added to it; label order
    in the other's dict does not matter."""
    others = [("relay_test_things_total", {"kind": "a"}, 3.0),
              ("relay_test_seconds_bucket", {"le": "1.0", "route": "r1"}, 4.0),
              ("relay_test_seconds_count", {"route": "r1"}, 4.0),
              ("relay_test_seconds_sum", {"route": "r1"}, 1.5)]
    found = samples(Merged(lambda: others, registry))
    assert value(found, "relay_test_things_total", kind="a") == 5.0
    assert value(found, "relay_test_seconds_bucket", route="r1", le="0.1") == 1.0
    assert value(found, "relay_test_seconds_bucket", route="r1", le="1.0") == 6.0
    assert value(found, "relay_test_seconds_count", route="r1") == 6.0
    assert value(found, "relay_test_seconds_sum", route="r1") == pytest.approx(2.05)


def test_the_same_label_set_from_two_others_is_summed(registry):
    """A replaced delivery process's last numbers and the new one's both count."""
    others = [("relay_test_things_total", {"kind": "a"}, 3.0),
              ("relay_test_things_total", {"kind": "b"}, 1.0),
              ("relay_test_things_total", {"kind": "b"}, 2.0)]
    found = samples(Merged(lambda: others, registry))
    assert value(found, "relay_test_things_total", kind="a") == 5.0
    assert value(found, "relay_test_things_total", kind="b") == 3.0


def test_label_sets_only_the_others_have_are_appended_in_order(registry):
    """The registry's own samples come first, then the others' new label sets in the order
    they were sent: buckets in `le` order, then `_count`, then `_sum`."""
    others = [("relay_test_things_total", {"kind": "b"}, 4.0),
              bucket("r2", "0.1", 0.0), bucket("r2", "1.0", 1.0), bucket("r2", "+Inf", 3.0),
              ("relay_test_seconds_count", {"route": "r2"}, 3.0),
              ("relay_test_seconds_sum", {"route": "r2"}, 7.5)]
    families = {f.name: f for f in Merged(lambda: others, registry).collect()}
    assert [(s.name, s.labels, s.value) for s in families["relay_test_things"].samples] == [
        ("relay_test_things_total", {"kind": "a"}, 2.0),
        ("relay_test_things_total", {"kind": "b"}, 4.0)]
    assert [(s.name, s.labels, s.value) for s in families["relay_test_seconds"].samples] == [
        bucket("r1", "0.1", 1.0), bucket("r1", "1.0", 2.0), bucket("r1", "+Inf", 2.0),
        ("relay_test_seconds_count", {"route": "r1"}, 2.0),
        ("relay_test_seconds_sum", {"route": "r1"}, 0.55),
        bucket("r2", "0.1", 0.0), bucket("r2", "1.0", 1.0), bucket("r2", "+Inf", 3.0),
        ("relay_test_seconds_count", {"route": "r2"}, 3.0),
        ("relay_test_seconds_sum", {"route": "r2"}, 7.5)]
    assert families["relay_test_seconds"].type == "histogram"


def test_samples_of_families_the_registry_lacks_are_left_out(registry):
    """A sample whose family this process does not declare has no type or help to serve
    with: it is not exposed."""
    found = samples(Merged(lambda: [("relay_unknown_total", {}, 1.0)], registry))
    assert not [name for name, _ in found if name.startswith("relay_unknown")]


def test_others_are_read_at_every_scrape(registry):
    """`others` is called on each collect, so a newer snapshot replaces the older one."""
    sent = [[("relay_test_things_total", {"kind": "a"}, 1.0)],
            [("relay_test_things_total", {"kind": "a"}, 10.0)]]
    merged = Merged(lambda: sent.pop(0), registry)
    assert value(samples(merged), "relay_test_things_total", kind="a") == 3.0
    assert value(samples(merged), "relay_test_things_total", kind="a") == 12.0


@pytest.fixture
def merged_exposition(registry) -> str:
    """The text exposition of a registry serving Merged, with added and appended samples."""
    others = [("relay_test_things_total", {"kind": "a"}, 3.0),
              ("relay_test_things_total", {"kind": "b"}, 4.0),
              bucket("r2", "0.1", 0.0), bucket("r2", "1.0", 1.0), bucket("r2", "+Inf", 3.0),
              ("relay_test_seconds_count", {"route": "r2"}, 3.0),
              ("relay_test_seconds_sum", {"route": "r2"}, 7.5)]
    served = CollectorRegistry()
    served.register(Merged(lambda: others, registry))
    return generate_latest(served).decode()


def test_the_merged_exposition_parses_back_to_the_merged_numbers(merged_exposition):
    """prometheus_client's own parser reads the families and values Merged produced."""
    families = {f.name: f for f in text_string_to_metric_families(merged_exposition)}
    assert {n: f.type for n, f in families.items()} == {
        "relay_test_things": "counter", "relay_test_seconds": "histogram",
        "relay_test_level": "gauge"}
    found = {(s.name, frozenset(s.labels.items())): s.value
             for f in families.values() for s in f.samples}
    assert value(found, "relay_test_things_total", kind="a") == 5.0
    assert value(found, "relay_test_things_total", kind="b") == 4.0
    assert value(found, "relay_test_seconds_bucket", route="r2", le="+Inf") == 3.0
    assert value(found, "relay_test_seconds_count", route="r2") == 3.0


def test_promtool_accepts_the_merged_exposition(merged_exposition):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail("promtool is required (RELAY_REQUIRE_TOOLS=1): apt-get install prometheus")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "metrics"], input=merged_exposition,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- prime -------------------------------------------------------------------------------------

@pytest.fixture
def config_of(tmp_path, server_cert, dkim_keys):
    """config_of(**overrides) -> a parsed Config built like conftest's base_config."""
    def make(**overrides):
        data = base_config(tmp_path, 2525, server_cert, dkim_keys, **overrides)
        return config_module.parse(yaml.safe_dump(data), tmp_path)
    return make


@pytest.fixture
def primed(config_of, dkim_keys):
    """prime() on the real REGISTRY with a submission listener, a feedback listener and a
    route named for this test only; their series are removed afterwards."""
    config = config_of(**{
        "server.listeners": [
            {"name": "prime-sub", "address": "127.0.0.1", "port": 0, "tls": "none"},
            {"name": "prime-feedback", "address": "127.0.0.1", "port": 0, "tls": "none",
             "role": "feedback"}],
        "routes": {"prime-route": {"host": "127.0.0.1", "port": 2525, "tls": "none"}},
        "domains": {"acme.fr": {"route": "prime-route", "dkim": [
            {"selector": "rsa1", "private_key": str(dkim_keys["rsa1"])},
            {"selector": "ed1", "private_key": str(dkim_keys["ed1"]), "algorithm": "ed25519-sha256"}]}},
    })
    prime(config)
    yield samples(metrics.REGISTRY)
    for stream in ("transactional", "bulk"):
        metrics.MESSAGES_RECEIVED.remove("prime-sub", stream)
    for result in metrics.DELIVERY_RESULTS:
        metrics.DELIVERIES.remove("prime-route", result)
    metrics.DELIVERY_DURATION.remove("prime-route")


def test_prime_creates_received_series_for_submission_listeners_only(primed):
    """Both streams of each submission listener start at 0; a feedback listener gets none."""
    for stream in ("transactional", "bulk"):
        assert value(primed, "relay_messages_received_total", listener="prime-sub", stream=stream) == 0
    assert not [labels for name, labels in primed if name == "relay_messages_received_total"
                and ("listener", "prime-feedback") in labels]


def test_prime_creates_every_route_and_result(primed):
    """Each configured route has a delivery count per result and an empty duration histogram."""
    for result in ("delivered", "bounced", "expired", "deferred"):
        assert value(primed, "relay_deliveries_total", route="prime-route", result=result) == 0
    assert value(primed, "relay_delivery_duration_seconds_count", route="prime-route") == 0
    assert value(primed, "relay_delivery_duration_seconds_bucket", route="prime-route", le="+Inf") == 0
    assert value(primed, "relay_delivery_duration_seconds_sum", route="prime-route") == 0


def test_prime_creates_the_series_of_every_closed_enum(primed):
    """Refusal reasons, SPF results, governor hold reasons, feedback source x type, and the
    configured DKIM algorithm's results all exist (whatever other tests counted in them)."""
    for reason in Refusal:
        assert value(primed, "relay_messages_rejected_total", reason=reason.value) is not None
    for result in SpfResult:
        assert value(primed, "relay_spf_checks_total", result=result.value) is not None
    for reason in HoldReason:
        assert value(primed, "relay_governor_deferrals_total", reason=reason.value) is not None
    for source in metrics.FEEDBACK_SOURCES:
        for kind in FeedbackKind:
            assert value(primed, "relay_feedback_events_total", source=source, type=kind.value) is not None
    for algorithm in ("rsa-sha256", "ed25519-sha256"):            # base_config has both keys
        for result in ("ok", "error"):
            assert value(primed, "relay_dkim_signatures_total", algorithm=algorithm, result=result) is not None
    assert value(primed, "relay_delivery_process_restarts_total") is not None


def test_priming_again_changes_nothing(primed, config_of):
    """prime runs at start and on every reload: no duplicate series, no value reset."""
    metrics.DELIVERIES.labels("prime-route", "delivered").inc()
    config = config_of(**{
        "server.listeners": [{"name": "prime-sub", "address": "127.0.0.1", "port": 0, "tls": "none"}],
        "routes": {"prime-route": {"host": "127.0.0.1", "port": 2525, "tls": "none"}},
        "domains": {"acme.fr": {"route": "prime-route"}}})
    prime(config)
    after = samples(metrics.REGISTRY)
    assert value(after, "relay_deliveries_total", route="prime-route", result="delivered") == 1
    assert set(after) >= set(primed)


# --- documented ----------------------------------------------------------------------------------

REQUIRED = {
    "relay_messages_received_total": "counter", "relay_messages_rejected_total": "counter",
    "relay_smtp_replies_total": "counter", "relay_queue_messages": "gauge",
    "relay_queue_oldest_seconds": "gauge", "relay_deliveries_total": "counter",
    "relay_delivery_duration_seconds": "histogram", "relay_dkim_signatures_total": "counter",
    "relay_spf_checks_total": "counter", "relay_governor_deferrals_total": "counter",
    "relay_domain_complaint_rate": "gauge", "relay_domain_bounce_rate": "gauge",
    "relay_domain_warmup_day": "gauge", "relay_domain_paused": "gauge",
    "relay_feedback_events_total": "counter", "relay_suppressions": "gauge",
}


def test_documented_names_every_required_metric_with_its_type():
    names = documented()
    assert {name: names.get(name) for name in REQUIRED} == REQUIRED


def test_documented_names_follow_the_conventions():
    """Lower-case `relay_` names; counters, and only counters, end in `_total`."""
    for name, kind in documented().items():
        assert re.fullmatch(r"relay_[a-z]+(_[a-z]+)*", name), name
        assert name.endswith("_total") == (kind == "counter"), name


def test_series_names_add_the_histograms_sample_names():
    names = metrics.series_names()
    assert {"relay_delivery_duration_seconds_bucket", "relay_delivery_duration_seconds_count",
            "relay_delivery_duration_seconds_sum"} <= names
    assert "relay_delivery_duration_seconds" not in names
    assert set(documented()) - {"relay_delivery_duration_seconds"} <= names


def readme_metrics_table() -> set[str]:
    """The metric names in the first column of the table under README's "## Metrics" heading."""
    text = README.read_text()
    section = re.split(r"^## Metrics.*$", text, maxsplit=1, flags=re.MULTILINE)[1]
    section = section.split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`(relay_[a-z_]+)`", section, re.MULTILINE)}


def test_every_documented_metric_is_in_the_readme_table():
    missing = sorted(set(documented()) - readme_metrics_table())
    assert not missing, f"README.md's metrics table lacks {missing}"


# --- SpoolCollector ------------------------------------------------------------------------------

@pytest.fixture
def config(config_of):
    """acme.fr and other.fr, reputation.window 7d, the spool in tmp_path/spool."""
    return config_of()


@pytest.fixture
def spool(config):
    spool = Spool(config.spool.path)
    spool.start()
    yield spool
    spool.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T)


@pytest.fixture
def governance(config, spool, clock) -> SqliteState:
    return SqliteState(spool.db, config, clock)


def scrape(collector: SpoolCollector) -> dict:
    """What a scrape does: read the state's figures, then collect."""
    run(collector.refresh())
    return samples(collector)


@pytest.fixture
def watch(config, clock):
    """The blocklist watch, on a zone listing acme.fr in dbl.spamhaus.org and refusing
    multi.surbl.org's queries (bit 1); no round has run."""
    zone = {("acme.fr.dbl.spamhaus.org", "A"): ["127.0.1.2"],
            ("acme.fr.multi.surbl.org", "A"): ["127.0.0.1"]}
    return BlocklistWatch(lambda: config, ZoneResolver(zone), clock)


@pytest.fixture
def gauges(config, governance, clock, watch):
    """gauges() -> the collector's samples now, by (name, labels)."""
    collector = SpoolCollector(lambda: config, clock, governance, watch)
    return lambda: scrape(collector)


def msg(id: str, created: float = T - 60, next_attempt: float = 0.0) -> QueuedMessage:
    return QueuedMessage(id=id, mail_from="billing@acme.fr", recipients=[Recipient("b@x.fr")],
                         domain="acme.fr", route="provider", body=b"Subject: hi\r\n\r\nhi\r\n",
                         created=created, next_attempt=next_attempt)


async def deferred(spool: Spool, m: QueuedMessage, until: float) -> None:
    """An attempt that failed temporarily: retried at `until`."""
    m.attempts += 1
    m.next_attempt = until
    await spool.record_attempt(m)


async def held(spool: Spool, m: QueuedMessage, until: float, reason: str = "rate") -> None:
    """The governor holds the message until `until` (not an attempt)."""
    m.held += until - T
    m.next_attempt = until
    await spool.record_hold(m, reason)


def test_an_empty_spool_reads_as_zeros(gauges):
    """Every state, reason, domain and scope has a series, at 0."""
    found = gauges()
    for queue_state in ("ready", "deferred", "held"):
        assert value(found, "relay_queue_messages", state=queue_state) == 0
        assert value(found, "relay_queue_oldest_seconds", state=queue_state) == 0
    for reason in SuppressionReason:
        assert value(found, "relay_suppressions", reason=reason.value) == 0
    for domain in ("acme.fr", "other.fr"):
        assert value(found, "relay_domain_complaint_rate", domain=domain) == 0
        assert value(found, "relay_domain_bounce_rate", domain=domain) == 0
        assert value(found, "relay_domain_warmup_day", domain=domain) == 0
        for scope in ("bulk", "all"):
            assert value(found, "relay_domain_paused", domain=domain, scope=scope) == 0


def test_the_spool_gauges_are_the_documented_ones(gauges):
    """SpoolCollector yields exactly the gauges `documented()` lists as read from the spool."""
    assert {name for name, _ in gauges()} == {name for name, _, _ in metrics.SPOOL_GAUGES.values()}


def test_blocklist_gauges_read_the_watchs_last_round(config, gauges, watch):
    """Before a round: every configured zone at 0, last check 0. After one: the listing is
    counted under its zone and kind, the refusing zone is flagged, never a listing."""
    found = gauges()
    assert value(found, "relay_blocklist_last_check_timestamp_seconds") == 0
    for zone in config.blocklists.ip_zones:
        assert value(found, "relay_blocklist_listed", zone=zone, kind="ip") == 0
        assert value(found, "relay_blocklist_refused", zone=zone) == 0
    run(watch.check())
    found = gauges()
    assert value(found, "relay_blocklist_listed", zone="dbl.spamhaus.org", kind="domain") == 1
    assert value(found, "relay_blocklist_listed", zone="multi.surbl.org", kind="domain") == 0
    assert value(found, "relay_blocklist_refused", zone="multi.surbl.org") == 1
    assert value(found, "relay_blocklist_refused", zone="dbl.spamhaus.org") == 0
    assert value(found, "relay_blocklist_last_check_timestamp_seconds") == T


def test_dmarc_gauge_counts_the_last_weeks_reports(gauges, governance):
    """relay_dmarc_messages: aligned and failing messages of the reports that ended within
    the last 7 days, per domain; older reports no longer count."""
    def report(rid, end, aligned, failing):
        rows = (Row("192.0.2.1", aligned, "none", "pass", "fail", "acme.fr"),
                Row("203.0.113.9", failing, "none", "fail", "fail", "acme.fr"))
        return AggregateReport("google.com", "", rid, end - 86400, end, "acme.fr", rows=rows)
    run(governance.record_dmarc_report(report("new", T - 3600, 90, 4)))
    run(governance.record_dmarc_report(report("old", T - 8 * 86400, 500, 500)))
    found = gauges()
    assert value(found, "relay_dmarc_messages", domain="acme.fr", result="aligned") == 90
    assert value(found, "relay_dmarc_messages", domain="acme.fr", result="failing") == 4
    assert value(found, "relay_dmarc_messages", domain="other.fr", result="failing") == 0


def test_queue_messages_are_counted_as_ready_deferred_or_held(spool, gauges):
    """Due now (never tried, or a hold already over) is ready; a future retry after an
    attempt is deferred; a future governor hold is held; an attempt after a hold clears it."""
    async def scenario():
        await spool.enqueue(msg("new", next_attempt=0.0), msg("due", next_attempt=T - 5),
                            msg("retry"), msg("hold"), msg("hold-over"), msg("hold-then-retry"))
        await deferred(spool, msg("retry"), T + 600)
        await held(spool, msg("hold"), T + 3600)
        await held(spool, msg("hold-over"), T)
        await held(spool, msg("hold-then-retry"), T + 60)
        await deferred(spool, msg("hold-then-retry"), T + 900)
    run(scenario())
    found = gauges()
    assert value(found, "relay_queue_messages", state="ready") == 3
    assert value(found, "relay_queue_messages", state="deferred") == 2
    assert value(found, "relay_queue_messages", state="held") == 1


def test_queue_states_are_judged_against_the_clock_at_scrape_time(spool, gauges, clock):
    """A deferred or held message becomes ready once its time has come, without a write."""
    async def scenario():
        await spool.enqueue(msg("retry"), msg("hold"))
        await deferred(spool, msg("retry"), T + 600)
        await held(spool, msg("hold"), T + 3600, reason="warmup")
    run(scenario())
    clock.advance(600)
    found = gauges()
    assert [value(found, "relay_queue_messages", state=s) for s in ("ready", "deferred", "held")] == [1, 0, 1]
    clock.advance(3000)
    found = gauges()
    assert [value(found, "relay_queue_messages", state=s) for s in ("ready", "deferred", "held")] == [2, 0, 0]


def oldest(found: dict) -> dict[str, float]:
    return {s: value(found, "relay_queue_oldest_seconds", state=s) for s in ("ready", "deferred", "held")}


def test_oldest_seconds_is_the_age_of_the_oldest_message_in_each_state(spool, gauges, clock):
    """now - the earliest `created` among the ready, the deferred and the held messages,
    growing with the clock; 0 for a state with no message."""
    async def scenario():
        await spool.enqueue(msg("older", created=T - 300), msg("newer", created=T - 60),
                            msg("retry", created=T - 1000), msg("hold", created=T - 500))
        await deferred(spool, msg("retry", created=T - 1000), T + 3600)
        await held(spool, msg("hold", created=T - 500), T + 3600)
    run(scenario())
    assert oldest(gauges()) == {"ready": 300, "deferred": 1000, "held": 500}
    clock.advance(100)
    assert oldest(gauges()) == {"ready": 400, "deferred": 1100, "held": 600}
    spool.delete("older")
    spool.delete("hold")
    assert oldest(gauges()) == {"ready": 160, "deferred": 1100, "held": 0}
    spool.delete("newer")
    spool.delete("retry")
    assert oldest(gauges()) == {"ready": 0, "deferred": 0, "held": 0}


def test_a_message_ages_into_the_state_it_moves_to(spool, gauges, clock):
    """A deferred message whose retry time has come is counted, with its age, as ready."""
    async def scenario():
        await spool.enqueue(msg("retry", created=T - 1000))
        await deferred(spool, msg("retry", created=T - 1000), T + 600)
    run(scenario())
    clock.advance(600)
    assert oldest(gauges()) == {"ready": 1600, "deferred": 0, "held": 0}


def test_oldest_seconds_is_never_negative(spool, gauges):
    """A message created after `now` (another process's clock ran ahead) counts as age 0."""
    run(spool.enqueue(msg("ahead", created=T + 5)))
    assert oldest(gauges()) == {"ready": 0, "deferred": 0, "held": 0}


def test_warmup_day_counts_utc_days_since_the_first_delivery(spool, gauges, clock):
    """Day 0 on the first delivery's UTC day, 3 three days later, counted in calendar days:
    a delivery at 23:59 is on day 1 two minutes later. A domain that never delivered is day 0."""
    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "acme.fr", 5, T - 3 * DAY)))
    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "acme.fr", 9, T - DAY)))
    found = gauges()
    assert value(found, "relay_domain_warmup_day", domain="acme.fr") == 3
    assert value(found, "relay_domain_warmup_day", domain="other.fr") == 0

    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "other.fr", 1, TODAY * DAY + DAY - 60)))
    clock.t = (TODAY + 1) * DAY + 60
    assert value(gauges(), "relay_domain_warmup_day", domain="other.fr") == 1


def test_suppressions_are_counted_by_reason(governance, gauges):
    """Each (recipient, sender domain) pair once, under its reason; other reasons stay 0."""
    async def scenario():
        await governance.suppress("a@x.net", "acme.fr", SuppressionReason.COMPLAINT)
        await governance.suppress("b@x.net", "acme.fr", SuppressionReason.COMPLAINT)
        await governance.suppress("a@x.net", "other.fr", SuppressionReason.COMPLAINT)
        await governance.suppress("a@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE)   # already
        await governance.suppress("c@x.net", "acme.fr", SuppressionReason.HARD_BOUNCE)
        await governance.suppress("d@x.net", "acme.fr", SuppressionReason.MANUAL)
    run(scenario())
    found = gauges()
    assert {reason.value: value(found, "relay_suppressions", reason=reason.value)
            for reason in SuppressionReason} == {
        "complaint": 3, "hard_bounce": 1, "manual": 1, "unsubscribed": 0, "soft_bounces": 0}


def feedback(spool: Spool, domain: str, kind: FeedbackKind, at: float, count: int = 1) -> None:
    def write(conn) -> None:
        for _ in range(count):
            n = conn.execute("SELECT COUNT(*) FROM feedback_events").fetchone()[0]
            tables.record_feedback(conn, f"test:{n}", domain, f"r{n}@x.net", kind.value, at, at)
    run(spool.db.write(write))


def test_rates_are_feedback_per_recipient_delivered_over_the_window(spool, gauges):
    """Complaints and hard bounces in reputation.window (7d) over recipients delivered in it;
    older deliveries and feedback, and other kinds of feedback, do not count."""
    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "acme.fr", 150, T - DAY)))
    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "acme.fr", 50, T)))
    run(spool.db.write(lambda conn: tables.add_deliveries(conn, "acme.fr", 800, T - 10 * DAY)))
    feedback(spool, "acme.fr", FeedbackKind.COMPLAINED, T - 3600)
    feedback(spool, "acme.fr", FeedbackKind.BOUNCED_HARD, T - 3600, count=4)
    feedback(spool, "acme.fr", FeedbackKind.BOUNCED_SOFT, T - 3600, count=9)
    feedback(spool, "acme.fr", FeedbackKind.COMPLAINED, T - 8 * DAY, count=5)
    found = gauges()
    assert value(found, "relay_domain_complaint_rate", domain="acme.fr") == pytest.approx(1 / 200)
    assert value(found, "relay_domain_bounce_rate", domain="acme.fr") == pytest.approx(4 / 200)


def test_a_domain_without_deliveries_has_rates_of_zero(spool, gauges):
    """Feedback with nothing delivered in the window is 0, not a division by zero."""
    feedback(spool, "other.fr", FeedbackKind.COMPLAINED, T - 60, count=2)
    feedback(spool, "other.fr", FeedbackKind.BOUNCED_HARD, T - 60)
    found = gauges()
    assert value(found, "relay_domain_complaint_rate", domain="other.fr") == 0
    assert value(found, "relay_domain_bounce_rate", domain="other.fr") == 0


def test_paused_shows_the_scope_of_each_domains_pause(spool, governance, gauges, clock):
    """An operator's pause holds all mail; a policy pause its own scope; resume lifts both."""
    run(governance.pause("acme.fr", "investigating"))
    run(spool.db.write(lambda conn: tables.set_policy_pause(conn, "other.fr", "bulk", "complaints", T)))
    found = gauges()
    assert value(found, "relay_domain_paused", domain="acme.fr", scope="all") == 1
    assert value(found, "relay_domain_paused", domain="acme.fr", scope="bulk") == 0
    assert value(found, "relay_domain_paused", domain="other.fr", scope="all") == 0
    assert value(found, "relay_domain_paused", domain="other.fr", scope="bulk") == 1
    run(governance.resume("acme.fr"))
    run(governance.resume("other.fr"))
    found = gauges()
    assert not [v for (name, _), v in found.items() if name == "relay_domain_paused" and v]


def test_domains_come_from_the_running_configuration(config_of, governance, clock, config, watch):
    """The config is read at every scrape: a domain added by a reload gets its series, a
    removed one loses them."""
    current = [config]
    collector = SpoolCollector(lambda: current[0], clock, governance, watch)
    assert value(scrape(collector), "relay_domain_warmup_day", domain="other.fr") == 0
    current[0] = config_of(**{"domains": {"new.fr": {"route": "provider"}}})
    domains = {dict(labels).get("domain") for name, labels in scrape(collector)
               if name == "relay_domain_warmup_day"}
    assert domains == {"new.fr"}


def test_delivery_results_are_the_final_recipient_states_and_deferred():
    """metrics.py imports nothing of relay's, so it names the outcomes itself: they must be
    model.RecipientState's final states, and "deferred"."""
    from relay.model import RecipientState
    final = {s.value for s in RecipientState if s is not RecipientState.QUEUED}
    assert set(metrics.DELIVERY_RESULTS) == final | {"deferred"}


def test_metrics_imports_nothing_of_relays():
    """Anything may count in relay.metrics: it must not import relay's modules (a cycle)."""
    import ast
    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m == "relay" or m.startswith("relay.")], imported

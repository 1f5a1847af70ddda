"""Prometheus metrics, declared here and nowhere else; served on the private `metrics:`
listener at /metrics, beside /healthz and /readyz (`web/health.py`).

Names are `relay_<subsystem>_<name>`, labels bounded: a listener, route or domain is
configured, a reason, result or type comes from a closed enum, never an address.

Two kinds of metric:
- counters and the histogram, moved where things happen, in whichever process does them.
  The delivery process sends a `snapshot()` of its own to the listener process every second
  (`outbound/process.py`), and the listener serves the sum (`Merged`), so one scrape shows
  both processes; a replaced delivery process's last numbers are kept, so sums never go back.
- gauges read from the spool when Prometheus scrapes (`spool/gauges.py`): queue, rates,
  warm-up day, pauses, suppressions, free space; declared here (`SPOOL_GAUGES`).
Every bounded label set is created at zero at start (`compose.prime_metrics`). This module
imports nothing of relay's: anything may count here. They hold across restarts because the spool does.
"""
from __future__ import annotations

from typing import Callable, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric

prometheus_client.disable_created_metrics()    # `_created` samples cannot be summed

REGISTRY = CollectorRegistry(auto_describe=True)

# --- acceptance (listener process) -------------------------------------------------------
MESSAGES_RECEIVED = Counter(
    "relay_messages_received", "Messages accepted and queued (one per DATA), by listener and stream",
    ["listener", "stream"], registry=REGISTRY)
MESSAGES_REJECTED = Counter(
    "relay_messages_rejected", "Connections, commands and messages refused by policy or failure, "
    "by reason", ["reason"], registry=REGISTRY)
SMTP_REPLIES = Counter(
    "relay_smtp_replies", "SMTP replies sent to clients, by command and basic reply code",
    ["command", "code"], registry=REGISTRY)
DKIM_SIGNATURES = Counter(
    "relay_dkim_signatures", "DKIM signatures made (messages and DSNs), by algorithm and result",
    ["algorithm", "result"], registry=REGISTRY)
CONTENT_FINDINGS = Counter(
    "relay_content_findings", "Deliverability lint findings in accepted and refused mail "
    "(content.mode warn or refuse_bulk), by rule", ["rule"], registry=REGISTRY)
SPF_CHECKS = Counter(
    "relay_spf_checks", "SPF evaluations of the gate at MAIL FROM (one per route egress IP; "
    "decisions served from its cache are not counted), by result", ["result"], registry=REGISTRY)

# --- delivery (delivery process) ---------------------------------------------------------
DELIVERIES = Counter(
    "relay_deliveries", "Recipient outcomes of delivery attempts, by route and result",
    ["route", "result"], registry=REGISTRY)
DELIVERY_DURATION = Histogram(
    "relay_delivery_duration_seconds", "Time of one upstream transaction (MAIL to the final "
    "reply), by route", ["route"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
GOVERNOR_DEFERRALS = Counter(
    "relay_governor_deferrals", "Messages the governor held back (not attempts), by reason",
    ["reason"], registry=REGISTRY)
DELIVERY_RESTARTS = Counter(
    "relay_delivery_process_restarts", "Times the delivery process died and was restarted",
    registry=REGISTRY)

# --- feedback (both) ---------------------------------------------------------------------
FEEDBACK_EVENTS = Counter(
    "relay_feedback_events", "New (deduplicated) feedback events, by source and type",
    ["source", "type"], registry=REGISTRY)

FEEDBACK_SOURCES = ("brevo", "mailjet", "ses", "sendgrid", "postmark", "dsn", "arf", "upstream",
                    "one_click")
# the final RecipientStates (model.py), and "deferred"
DELIVERY_RESULTS = ("delivered", "bounced", "expired", "deferred")
QUEUE_STATES = ("ready", "deferred", "held")


Sample = tuple[str, dict[str, str], float]


def snapshot(registry: CollectorRegistry = REGISTRY) -> list[Sample]:
    """Every sample of the counters and histograms, for another process to add to its own."""
    return [(s.name, s.labels, s.value) for family in registry.collect() for s in family.samples]


class Merged:
    """The process's own counters plus the samples other processes sent (`others()`)."""

    def __init__(self, others: Callable[[], Iterable[Sample]],
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.others = others
        self.registry = registry

    def collect(self):
        extra: dict[str, dict[tuple, float]] = {}
        for name, labels, value in self.others():
            by_labels = extra.setdefault(name, {})
            key = tuple(sorted(labels.items()))
            by_labels[key] = by_labels.get(key, 0.0) + value
        for family in self.registry.collect():
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            seen: set[tuple[str, tuple]] = set()
            for s in family.samples:
                key = tuple(sorted(s.labels.items()))
                seen.add((s.name, key))
                merged.add_sample(s.name, s.labels, s.value + extra.get(s.name, {}).get(key, 0.0))
            for name in _sample_names(family):
                for key, value in extra.get(name, {}).items():
                    if (name, key) not in seen:
                        merged.add_sample(name, dict(key), value)
            yield merged


def _sample_names(family: Metric) -> list[str]:
    if family.type == "counter":
        return [family.name + "_total"]
    if family.type == "histogram":
        return [family.name + suffix for suffix in ("_bucket", "_count", "_sum")]
    return [family.name]


# The gauges spool/gauges.py computes at scrape time: key -> (name, help, labels).
SPOOL_GAUGES = {
    "complaint": ("relay_domain_complaint_rate", "Complaints per recipient delivered over "
                  "reputation.window (0.001 is 0.10%)", ["domain"]),
    "bounce": ("relay_domain_bounce_rate", "Hard bounces per recipient delivered over "
               "reputation.window (0.02 is 2%)", ["domain"]),
    "warmup": ("relay_domain_warmup_day", "Healthy days since the domain's first delivery "
               "through relay: its step in limits.warmup.schedule (per provider: the lowest)",
               ["domain"]),
    "paused": ("relay_domain_paused", "1 while the domain's mail (scope all) or bulk mail "
               "(scope bulk) is held by a pause", ["domain", "scope"]),
    "queue": ("relay_queue_messages", "Messages in the spool: ready (due now), deferred "
              "(waiting to retry), held (by the governor)", ["state"]),
    "oldest": ("relay_queue_oldest_seconds", "Age of the oldest message in the spool in that "
               "state (0 when there is none)", ["state"]),
    "suppressions": ("relay_suppressions", "Suppressed (recipient, sender domain) pairs, by reason",
                     ["reason"]),
    "state_up": ("relay_state_backend_up", "1 while the governance state answers, 0 while it does "
                 "not (a fleet's Redis): the node then accepts into its spool and sends nothing "
                 "the state has not granted", []),
    "free": ("relay_spool_free_bytes", "Bytes the spool can still write: free space of its "
             "filesystem plus SQLite's free pages", []),
    "min_free": ("relay_spool_min_free_bytes", "spool.min_free: with less free, new mail gets "
                 "452 4.3.1", []),
    "blocklist_listed": ("relay_blocklist_listed", "Watched names the zone lists at its last "
                         "check (kind ip: the routes' egress IPs; domain: sender domains and the "
                         "domains linked from bulk mail); the names are in the blocklist_listed "
                         "event and `relay doctor`", ["zone", "kind"]),
    "blocklist_refused": ("relay_blocklist_refused", "1 when the zone answered its last check "
                          "with error answers (it refuses our queries: use a local resolver "
                          "or a DQS key), else 0", ["zone"]),
    "blocklist_checked": ("relay_blocklist_last_check_timestamp_seconds", "When the blocklists "
                          "were last checked (Unix time; 0 before the first check)", []),
    "dmarc": ("relay_dmarc_messages", "Messages sent as the domain that the DMARC aggregate "
              "reports of the last 7 days counted, by result: aligned (DMARC pass) or failing",
              ["domain", "result"]),
}


def documented() -> dict[str, str]:
    """Every metric relay exposes, as PromQL names it (counters end in `_total`) -> its type;
    the README table and the tests are checked against it."""
    names = {family.name + ("_total" if family.type == "counter" else ""): family.type
             for family in REGISTRY.collect()}
    names.update({name: "gauge" for name, _, _ in SPOOL_GAUGES.values()})
    return names


def series_names() -> set[str]:
    """Every series name a query may use: the histogram's `_bucket`, `_count`, `_sum` too."""
    names = set()
    for name, kind in documented().items():
        names.update([name + s for s in ("_bucket", "_count", "_sum")] if kind == "histogram" else [name])
    return names


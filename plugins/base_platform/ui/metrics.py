"""``/metrics``: the platform's and the datasets' figures in Prometheus' text format.

Built per scrape from :mod:`base_platform.ui.state`, whose reads are cached: a scrape costs no
Argo CD call beyond the cache's, and no dataset scan. Cached figures repeat their last good value
while a source fails, so each source's age and last read's outcome go out beside them, and the
datasets' freshness age is taken now, from the commit time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from base_platform.pipelines.run_records import seconds_since
from base_platform.types import JSON

if TYPE_CHECKING:
    from base_platform.ui.state import Cached

SYNC_STATES = ("Synced", "OutOfSync", "Unknown", "Missing")
HEALTH_STATES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


def render(
    platform: JSON,
    pipelines: list[JSON],
    deploy: JSON | None,
    drift: JSON | None,
    sources: Mapping[str, Cached[Any] | None] | None = None,
) -> bytes:
    """``sources``: the cache's metadata of each read behind the figures (None: never read
    successfully), by the ``source`` label of ``base_platform_source_{up,age_seconds}``."""
    registry = CollectorRegistry()
    labels = ["environment", "app", "wave"]
    sync = Gauge(
        "base_app_sync", "1 for the app's current Argo CD sync status", [*labels, "status"], registry=registry
    )
    health = Gauge(
        "base_app_health",
        "1 for the app's current Argo CD health status",
        [*labels, "status"],
        registry=registry,
    )
    for app in platform["components"]:
        where = (platform["environment"], app["name"], app["wave"])
        for state in SYNC_STATES:
            sync.labels(*where, state).set(1 if app["sync"] == state else 0)
        for state in HEALTH_STATES:
            health.labels(*where, state).set(1 if app["health"] == state else 0)
    _deploy(registry, deploy)
    _drift(registry, drift)
    _datasets(registry, pipelines)
    _sources(registry, sources or {})
    return generate_latest(registry)


def _sources(registry: CollectorRegistry, sources: Mapping[str, Cached[Any] | None]) -> None:
    up = Gauge(
        "base_platform_source_up",
        "1 if the last read of the source behind these figures succeeded, 0 if it failed or never did",
        ["source"],
        registry=registry,
    )
    age = Gauge(
        "base_platform_source_age_seconds",
        "Seconds since the source's figures were last read successfully (none if never)",
        ["source"],
        registry=registry,
    )
    for name, read in sources.items():
        up.labels(name).set(1 if read is not None and read.up else 0)
        if read is not None:
            age.labels(name).set(read.age_seconds)


def _deploy(registry: CollectorRegistry, deploy: JSON | None) -> None:
    ok = Gauge(
        "base_deploy_last_ok",
        "1 if the last platform_deploy run succeeded",
        ["environment"],
        registry=registry,
    )
    verdict = Gauge(
        "base_deploy_component_ok",
        "1 if the component's last deploy verdict was ok",
        ["app"],
        registry=registry,
    )
    if deploy:
        ok.labels(deploy.get("environment", "")).set(1 if deploy.get("ok") else 0)
        for row in deploy.get("components") or []:
            verdict.labels(row["component"]).set(1 if row.get("ok") else 0)


def _drift(registry: CollectorRegistry, drift: JSON | None) -> None:
    findings = Gauge(
        "base_drift_findings",
        "Drift findings of the last nightly check, by kind",
        ["environment", "kind"],
        registry=registry,
    )
    if drift:
        for kind, count in (drift.get("counts") or {}).items():
            findings.labels(drift.get("environment", ""), kind).set(count)


def _datasets(registry: CollectorRegistry, pipelines: list[JSON]) -> None:
    rows = Gauge(
        "base_dataset_rows", "Rows of the dataset's last run", ["dataset", "outcome"], registry=registry
    )
    gauges: dict[str, Any] = {
        "gb_per_hour": Gauge(
            "base_dataset_gb_per_hour", "GB/hour of the last run", ["dataset"], registry=registry
        ),
        "wall_seconds": Gauge(
            "base_dataset_run_seconds", "Wall-clock duration of the last run", ["dataset"], registry=registry
        ),
        "quarantine_rate": Gauge(
            "base_dataset_quarantine_ratio", "Quarantined / rows in, last run", ["dataset"], registry=registry
        ),
    }
    freshness = Gauge(
        "base_dataset_age_seconds",
        "Seconds since the last commit, by the clock now",
        ["dataset"],
        registry=registry,
    )
    slo = Gauge(
        "base_dataset_freshness_slo_seconds",
        "The spec's freshness bound (max_age_hours)",
        ["dataset"],
        registry=registry,
    )
    breaker = Gauge(
        "base_dataset_breaker_open",
        "1 while the dataset's circuit breaker is open (its pipeline paused, an audit waiting)",
        ["dataset"],
        registry=registry,
    )
    lag_events = Gauge(
        "base_stream_lag_events",
        "Events of the stream not yet committed as the last batch began, by state",
        ["dataset", "state"],
        registry=registry,
    )
    lag_seconds = Gauge(
        "base_stream_lag_seconds",
        "Age of the oldest such event (by Redis's clock), by state",
        ["dataset", "state"],
        registry=registry,
    )
    for row in pipelines:
        breaker.labels(row["dataset"]).set(1 if row["breaker"]["state"] == "open" else 0)
        for state in ("undelivered", "pending") if row.get("lag") else ():
            lag_events.labels(row["dataset"], state).set(row["lag"][state])
            lag_seconds.labels(row["dataset"], state).set(row["lag"][f"{state}_age_seconds"])
        if row["freshness_slo_seconds"] is not None:
            slo.labels(row["dataset"]).set(row["freshness_slo_seconds"])
        if row["last_run"] is None:
            continue
        for outcome in ("in", "stored", "quarantined"):
            rows.labels(row["dataset"], outcome).set(row[f"rows_{outcome}"])
        for key, gauge in gauges.items():
            gauge.labels(row["dataset"]).set(row[key])
        if row.get("committed_at"):  # not the age as of the read: that one stops while it is stale
            freshness.labels(row["dataset"]).set(seconds_since(row["committed_at"]))

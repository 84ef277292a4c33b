"""``/metrics``: the platform's and the datasets' figures in Prometheus' text format.

Built per scrape from :mod:`base_platform.ui.state`, whose reads are cached: a scrape costs no
Argo CD call beyond the cache's, and no dataset scan.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from base_platform.types import JSON

SYNC_STATES = ("Synced", "OutOfSync", "Unknown", "Missing")
HEALTH_STATES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


def render(platform: JSON, pipelines: list[JSON], deploy: JSON | None, drift: JSON | None) -> bytes:
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
    return generate_latest(registry)


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
        "freshness_age_seconds": Gauge(
            "base_dataset_age_seconds", "Seconds since the last commit", ["dataset"], registry=registry
        ),
    }
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

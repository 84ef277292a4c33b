"""The platform page's data and /metrics, against the Argo CD simulator over HTTP."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.artifacts import write_report
from base_platform.ui import app, metrics, state
from tests.scenarios import deployed_platform


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "CACHE", state.TTLCache(state.CACHE_SECONDS))


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_state_names_every_component_with_its_live_status(start_simulator: Callable[..., Any]) -> None:
    start_simulator(deployed_platform(omit=("mlflow",)))
    platform = state.platform_state("dev")
    apps = {c["name"]: c for c in platform["components"]}
    assert len(apps) == 28 and platform["problem"] is None
    assert (apps["vault"]["sync"], apps["vault"]["health"]) == ("Synced", "Healthy")
    assert (apps["mlflow"]["exists"], apps["mlflow"]["health"]) == (False, "Missing")
    assert apps["airflow"]["depends_on"] and apps["airflow"]["wave"] == "orchestration"


def test_each_environment_sees_only_the_apps_deployed_to_its_clusters(
    start_simulator: Callable[..., Any],
) -> None:
    start_simulator(deployed_platform("prod"))
    prod = {c["name"]: c for c in state.platform_state("prod")["components"]}
    dev = {c["name"]: c for c in state.platform_state("dev")["components"]}
    assert (prod["vault"]["exists"], prod["vault"]["health"]) == (True, "Healthy")
    assert (dev["vault"]["exists"], dev["vault"]["health"]) == (False, "Missing")
    assert not any(c["exists"] for c in dev.values())


@pytest.mark.slow
def test_a_hung_argo_cd_costs_a_request_seconds_not_minutes(
    start_simulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP: connections are accepted, nothing answers. A cached value is served at once,
    stale; with nothing cached, a 503's NotReady within the wait; the read gives up after its
    short call deadline, and the page then names the problem."""
    sim = start_simulator(deployed_platform())
    monkeypatch.setattr(state, "CACHE", state.TTLCache(0.5))
    assert state.platform_state("dev")["problem"] is None
    time.sleep(0.6)
    os.kill(sim.proc.pid, signal.SIGSTOP)
    try:
        begun = time.monotonic()
        stale = state.platform_state("dev")
        assert time.monotonic() - begun < 1.0
        assert stale["stale"] and stale["age_seconds"] >= 0.5 and stale["problem"] is None
        assert {c["health"] for c in stale["components"]} == {"Healthy"}

        monkeypatch.setattr(state, "CACHE", state.TTLCache(60))
        begun = time.monotonic()
        with pytest.raises(state.NotReady):
            state.platform_state("dev")
        assert time.monotonic() - begun < state.ARGOCD_WAIT_SECONDS + 2
        deadline = time.monotonic() + state.ARGOCD_CALL_SECONDS + 5  # not the hook's 30 s x 5 attempts
        while True:
            try:
                failed = state.platform_state("dev")
                break
            except state.NotReady:
                assert time.monotonic() < deadline, "the read outlived its deadline"
        assert "did not answer" in failed["problem"] and failed["stale"]
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)


def source(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, name: str) -> float:
    return values[(f"base_platform_source_{metric}", (("source", name),))]


@pytest.mark.slow
def test_metrics_say_a_source_is_down_and_how_old_its_repeated_figures_are(
    start_simulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Argo CD stopped (SIGSTOP) after one good read: the apps' figures repeat that read, but once
    the refresh fails, /metrics says so (up 0) and their age keeps growing; the datasets' read
    failing (no catalog) likewise. Never read successfully: up 0 and no age."""
    sim = start_simulator(deployed_platform())
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("AIRFLOW_CONN_ICEBERG_DEFAULT", raising=False)  # every datasets' read fails
    monkeypatch.setattr(state, "CACHE", state.TTLCache(0.5))
    state.CACHE.get("pipelines", lambda: [])  # the datasets' last good read: none to show
    fresh = samples(app.metrics_body("dev"))
    assert source(fresh, "up", "argocd") == 1 and source(fresh, "age_seconds", "argocd") < 0.5
    assert source(fresh, "up", "deploy") == 1 and source(fresh, "up", "drift") == 1
    time.sleep(0.6)
    os.kill(sim.proc.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + state.ARGOCD_CALL_SECONDS + 5
        while source(down := samples(app.metrics_body("dev")), "up", "argocd") == 1:
            assert time.monotonic() < deadline, "the failed refresh never showed"
            time.sleep(0.2)
        key = (("app", "vault"), ("environment", "dev"), ("status", "Healthy"), ("wave", "core"))
        assert down[("base_app_health", key)] == 1.0  # the last good value, repeated
        assert source(down, "age_seconds", "argocd") >= state.ARGOCD_CALL_SECONDS
        assert source(down, "up", "pipelines") == 0 and source(down, "age_seconds", "pipelines") > 0.5
        time.sleep(1.0)
        later = samples(app.metrics_body("dev"))
        assert source(later, "up", "argocd") == 0
        assert source(later, "age_seconds", "argocd") >= source(down, "age_seconds", "argocd") + 0.9

        monkeypatch.setattr(state, "CACHE", state.TTLCache(60))  # nothing cached: Argo CD never read
        state.CACHE.get("pipelines", lambda: [])
        deadline = time.monotonic() + state.ARGOCD_CALL_SECONDS + 5
        while True:
            try:
                never = samples(app.metrics_body("dev"))
                break
            except state.NotReady:
                assert time.monotonic() < deadline, "the first read outlived its deadline"
        assert source(never, "up", "argocd") == 0
        assert ("base_platform_source_age_seconds", (("source", "argocd"),)) not in never
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)


def test_the_datasets_freshness_age_grows_between_scrapes_without_a_new_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The age is the commit's, by the clock of each scrape and page request: a stale or failing
    read of the figures must not freeze it below the freshness SLO."""
    monkeypatch.setattr(state, "CACHE", state.TTLCache(60))
    committed_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    reads = []

    def read() -> list[dict[str, Any]]:  # a row as the datasets' read leaves it, an hour after a commit
        reads.append(committed_at)
        return [
            {
                "dataset": "transactions",
                "last_run": "r1",
                "committed_at": committed_at,
                "freshness_age_seconds": 3600.0,  # what the read before this change stored
                "freshness_slo_seconds": 86400.0,
                "rows_in": 10,
                "rows_stored": 10,
                "rows_quarantined": 0,
                "quarantine_rate": 0.0,
                "gb_per_hour": 1.0,
                "wall_seconds": 1.0,
                "breaker": {"state": "closed"},
            }
        ]

    state.CACHE.get("pipelines", read)
    platform = {"environment": "dev", "components": []}
    key = ("base_dataset_age_seconds", (("dataset", "transactions"),))
    first = state.pipeline_rows()
    before = samples(metrics.render(platform, first, None, None))[key]
    time.sleep(1.1)
    second = state.pipeline_rows()
    assert reads == [committed_at]  # one read: the age grew without it
    assert samples(metrics.render(platform, first, None, None))[key] >= before + 1.0 >= 3601.0
    assert second[0]["freshness_age_seconds"] >= first[0]["freshness_age_seconds"] + 1.0


@pytest.mark.slow
def test_a_hundred_scrapes_cost_one_argo_cd_read(
    start_simulator: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    start_simulator(deployed_platform())
    calls = []
    real = ArgoCDHook.list_applications

    def counted(self: ArgoCDHook, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ArgoCDHook, "list_applications", counted)
    for _ in range(100):
        body = metrics.render(state.platform_state("dev"), [], None, None)
    assert len(calls) == 1
    values = samples(body)
    key = (("app", "vault"), ("environment", "dev"), ("status", "Healthy"), ("wave", "core"))
    assert values[("base_app_health", key)] == 1.0


def test_metrics_carry_the_last_deploy_drift_and_dataset_figures() -> None:
    platform = {"environment": "dev", "components": []}
    deploy = {"environment": "dev", "ok": False, "components": [{"component": "vault", "ok": False}]}
    drift = {"environment": "dev", "counts": {"spec": 2}}
    row = {
        "dataset": "transactions",
        "last_run": "r1",
        "rows_in": 10,
        "rows_stored": 8,
        "rows_quarantined": 2,
        "gb_per_hour": 3.5,
        "wall_seconds": 12.0,
        "quarantine_rate": 0.2,
        "freshness_age_seconds": 60.0,
        "freshness_slo_seconds": 86400.0,
        "breaker": {"state": "open", "reason": "quarantine rate 20.0% (2 of 10 rows) is above the limit"},
    }
    lag = {"undelivered": 40_000, "undelivered_age_seconds": 4.5, "pending": 0, "pending_age_seconds": 0.0}
    stream = row | {"dataset": "card_events", "breaker": {"state": "closed"}, "lag": lag}
    values = samples(metrics.render(platform, [row, stream], deploy, drift))
    assert (
        values[("base_stream_lag_events", (("dataset", "card_events"), ("state", "undelivered")))] == 40_000
    )
    assert values[("base_stream_lag_seconds", (("dataset", "card_events"), ("state", "undelivered")))] == 4.5
    assert not any(
        name.startswith("base_stream") and ("dataset", "transactions") in key for name, key in values
    )
    assert values[("base_deploy_last_ok", (("environment", "dev"),))] == 0.0
    assert values[("base_deploy_component_ok", (("app", "vault"),))] == 0.0
    assert values[("base_drift_findings", (("environment", "dev"), ("kind", "spec")))] == 2.0
    assert values[("base_dataset_rows", (("dataset", "transactions"), ("outcome", "quarantined")))] == 2.0
    assert values[("base_dataset_quarantine_ratio", (("dataset", "transactions"),))] == 0.2
    assert values[("base_dataset_freshness_slo_seconds", (("dataset", "transactions"),))] == 86400.0
    assert values[("base_dataset_breaker_open", (("dataset", "transactions"),))] == 1.0


def test_each_card_gets_the_verdict_of_the_newest_run_that_deployed_it_to_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path))

    def deploy(run_id: str, rows: list[dict[str, Any]], when: float, environment: str = "dev") -> None:
        report = {
            "environment": environment,
            "ok": True,
            "run_id": run_id,
            "finished_at": run_id,
            "components": rows,
        }
        paths = write_report("platform_deploy", run_id, "deploy", report, "# deploy")
        os.utime(paths["json"].removeprefix("file://"), (when, when))

    deploy("r1", [{"component": "vault", "verdict": "deployed", "ok": True}], 1_000)
    deploy("r2", [{"component": "vault", "verdict": "failed: boom", "ok": False}], 2_000)
    deploy(
        "r3",
        [
            {"component": "vault", "verdict": "not run", "ok": False},
            {"component": "cert-manager", "verdict": "deployed", "ok": True},
        ],
        3_000,
    )
    deploy(
        "p1", [{"component": "vault", "verdict": "deployed", "ok": True}], 4_000, "prod"
    )  # newest, not dev's
    verdicts = state.last_verdicts("dev")
    assert verdicts["vault"] == {"verdict": "failed: boom", "ok": False, "run_id": "r2", "finished_at": "r2"}
    assert verdicts["cert-manager"]["run_id"] == "r3" and "argocd" not in verdicts
    latest = state.latest_report("platform_deploy", "deploy", "dev")
    assert latest is not None and latest["run_id"] == "r3"
    assert state.last_verdicts("prod") == {
        "vault": {"verdict": "deployed", "ok": True, "run_id": "p1", "finished_at": "p1"}
    }
    assert state.latest_report("platform_deploy", "deploy", "staging") is None

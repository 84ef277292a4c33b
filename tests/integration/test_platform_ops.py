"""platform_validate, platform_drift, platform_rollback and platform_destroy under dag.test()
against the Argo CD and Vault simulators."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import httpx
import pytest

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.artifacts import run_folder
from base_platform.catalog.loader import default_catalog, load_environment
from base_platform.catalog.render import render_application
from tests.conftest import ROOT
from tests.scenarios import deployed_platform

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))


def dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py")).dags[dag_id]


def run(dag_id: str, **conf: Any):
    dag_run = dag(dag_id).test(run_conf={"environment": "dev"} | conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    return dag_run, {t if i < 0 else f"{t}[{i}]": s for (t, i), s in states.items()}


def report(dag_id: str, run_id: str, name: str) -> dict[str, Any]:
    folder = run_folder(dag_id, run_id)
    assert (folder / f"{name}.md").exists()
    body: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return body


# ---- platform_validate ----------------------------------------------------------------------
def test_validate_reports_a_healthy_platform(airflow_db, platform) -> None:
    platform()
    dag_run, states = run("platform_validate", scope="all")
    assert dag_run.state == "success", states
    body = report("platform_validate", dag_run.run_id, "validation")
    assert body["verdict"] == "healthy" and body["total"] > 90 and body["errors"] == 0


def test_validate_core_fails_on_a_sealed_vault_and_still_runs_every_check(airflow_db, platform) -> None:
    _, vault = platform()
    httpx.post(f"{vault.url}/sandbox/seal", json={"sealed": True}).raise_for_status()
    dag_run, states = run("platform_validate", scope="core")
    assert dag_run.state == "failed"
    assert states["checks.core"] == "success" and states["report"] == "failed"
    assert states["checks.shared"] == "skipped"
    body = report("platform_validate", dag_run.run_id, "validation")
    failed = [c for c in body["checks"] if not c["passed"]]
    assert body["verdict"] == "failed" and body["total"] == 15
    assert [(c["name"], c["message"].split(" is ")[-1]) for c in failed] == [("vault_health", "sealed")]


# ---- platform_drift ------------------------------------------------------------------------
DRIFT = {"kind": "Deployment", "live": {"spec": {"replicas": 5}}, "target": {"spec": {"replicas": 1}}}


def drifted(environment: str) -> dict[str, Any]:
    """Missing, orphan, OutOfSync with a field diff, revision drift and bad health at once."""
    scenario = deployed_platform(
        environment, omit=("logging",), monitoring={"drift": [DRIFT]}, platform_ui={"outcome": "Degraded"}
    )
    scenario["existing"]["service-mesh"]["spec"]["source"]["targetRevision"] = "v0.9"
    scenario["existing"]["platform-ui"]["health"] = "Degraded"
    scenario["existing"]["legacy-reports"] = {"project": "default", "namespace": "reports"}
    return scenario


def test_drift_report_names_every_kind_of_drift(airflow_db, start_simulator) -> None:
    start_simulator(drifted("dev"))
    dag_run, states = run("platform_drift", heal=False)
    assert dag_run.state == "success", states
    assert states["heal_drift"] == "skipped" and states["notify"] == "skipped"
    body = report("platform_drift", dag_run.run_id, "drift")
    found = {(f["app"], f["kind"]): f for f in body["findings"]}
    assert set(found) == {
        ("logging", "missing"),
        ("legacy-reports", "orphan"),
        ("monitoring", "out_of_sync"),
        ("service-mesh", "revision"),
        ("platform-ui", "health"),
    }
    assert found[("service-mesh", "revision")]["message"] == "tracks 'v0.9', desired 'main'"
    diff = found[("monitoring", "out_of_sync")]["resources"]
    assert diff == [
        {
            "resource": "apps/Deployment/monitoring/monitoring",
            "fields": [{"path": "spec.replicas", "live": 5, "target": 1}],
        }
    ]
    assert body["counts"] == {"health": 1, "missing": 1, "orphan": 1, "out_of_sync": 1, "revision": 1}
    markdown = (run_folder("platform_drift", dag_run.run_id) / "drift.md").read_text()
    assert "| monitoring | apps/Deployment/monitoring/monitoring | spec.replicas | 5 | 1 |" in markdown


def test_drift_heals_only_allowlisted_apps(airflow_db, start_simulator) -> None:
    start_simulator(drifted("dev"))
    dag_run, states = run("platform_drift")
    assert states["heal_drift"] == "success", states
    body = report("platform_drift", dag_run.run_id, "drift")
    assert {h["app"]: h["outcome"] for h in body["healed"]} == {
        "monitoring": "healed",
        "service-mesh": "healed",
    }
    hook = ArgoCDHook()
    assert hook.get_application("monitoring")["status"]["sync"]["status"] == "Synced"
    assert hook.get_application("service-mesh")["spec"]["source"]["targetRevision"] == "main"
    assert not hook.application_exists("logging")  # missing apps are for platform_deploy, not healing


def test_drift_in_prod_is_not_healed_and_is_notified(airflow_db, start_simulator, webhook) -> None:
    start_simulator(drifted("prod"))
    _, states = run("platform_drift", environment="prod")
    assert states["heal_drift"] == "skipped" and states["notify"] == "success", states
    assert ArgoCDHook().get_application("monitoring")["status"]["sync"]["status"] == "OutOfSync"
    [message] = webhook.received
    assert message["@type"] == "MessageCard"
    assert (
        message["title"] == "Platform drift in prod: 1 health, 1 missing, 1 orphan, 1 out_of_sync, 1 revision"
    )
    assert "spec.replicas" in message["text"]


def test_no_drift_sends_no_message(airflow_db, start_simulator, webhook) -> None:
    start_simulator(deployed_platform("staging"))
    dag_run, states = run("platform_drift", environment="staging")
    assert dag_run.state == "success" and states["notify"] == "skipped"
    assert report("platform_drift", dag_run.run_id, "drift")["drifted"] is False
    assert webhook.received == []


# ---- platform_rollback ---------------------------------------------------------------------
def _sync_to(name: str, revision: str) -> None:
    hook = ArgoCDHook()
    hook.sync_application(name, revision=revision)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        app = hook.get_application(name)
        status = app["status"]
        moved = status["sync"]["revision"] != status["history"][0]["revision"]
        if status["health"]["status"] == "Healthy" and not app.get("operation") and moved:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not sync to {revision}")


@pytest.mark.parametrize("automated", [False, True])
def test_rollback_to_previous_with_automated_sync_on_and_off(airflow_db, platform, automated) -> None:
    platform()
    hook = ArgoCDHook()
    before = hook.get_application("monitoring")["status"]["sync"]["revision"]
    _sync_to("monitoring", "v2")
    if automated:
        app = hook.get_application("monitoring")
        app["spec"]["syncPolicy"]["automated"] = {"prune": False, "selfHeal": True}
        hook.upsert_application({"metadata": {"name": "monitoring"}, "spec": app["spec"]})
    dag_run, states = run("platform_rollback", components=["monitoring"], to="previous")
    assert dag_run.state == "success", states
    assert states["rollback[0]"] == "success"  # the rollback and the wait for it, in one task
    app = hook.get_application("monitoring")
    assert app["status"]["sync"]["revision"] == before
    assert not (app["spec"].get("syncPolicy") or {}).get("automated")
    [row] = report("platform_rollback", dag_run.run_id, "rollback")["apps"]
    assert (row["history_id"], row["outcome"], row["pinned"]["revision"]) == (0, "done", before)


def test_drift_leaves_an_app_pinned_by_rollback_alone(airflow_db, platform) -> None:
    """The nightly heal would sync monitoring (dev allowlists it) back to main, undoing the rollback."""
    platform()
    before = ArgoCDHook().get_application("monitoring")["status"]["sync"]["revision"]
    _sync_to("monitoring", "v2")
    rolled_back, _ = run("platform_rollback", components=["monitoring"], to="previous")
    assert rolled_back.state == "success"
    dag_run, states = run("platform_drift")
    body = report("platform_drift", dag_run.run_id, "drift")
    [pinned] = [f for f in body["findings"] if f["app"] == "monitoring"]
    assert pinned["kind"] == "pinned" and pinned["message"].startswith("pinned by rollback at ")
    assert f"revision {before}" in pinned["message"]
    assert states["heal_drift"] == "skipped" and body["healed"] == []
    assert ArgoCDHook().get_application("monitoring")["status"]["sync"]["revision"] == before


def test_rollback_to_an_unknown_history_id_fails_in_plan(airflow_db, platform) -> None:
    platform()
    dag_run, states = run("platform_rollback", wave="shared", to="42")
    assert dag_run.state == "failed" and states["plan"] == "failed"


# ---- platform_destroy ----------------------------------------------------------------------
def _deleted_at(name: str) -> str:
    items = ArgoCDHook().list_applications(name=name)["items"]
    return items[0]["metadata"].get("deletionTimestamp", "") if items else ""


def test_destroy_deletes_dependents_first_and_waits_until_gone(airflow_db, platform) -> None:
    platform(top={"defaults": {"delete_seconds": 0.3, "resources": [{"kind": "Service"}]}})
    dag_run, states = run("platform_destroy", waves=["base"], confirm="dev")
    assert dag_run.state == "success", states
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    base = [c for c in default_catalog().components if c.wave.value == "base"]
    edges = [(c.name, dep) for c in base for dep in c.depends_on if dep in {b.name for b in base}]
    assert len(edges) > 10
    for dependent, dependency in edges:
        assert tis[f"base.{dependent}"].end_date <= tis[f"base.{dependency}"].start_date, (
            dependent,
            dependency,
        )
    hook = ArgoCDHook()
    assert not any(hook.application_exists(c.name) for c in base)
    assert hook.application_exists("airflow") and states["orchestration.airflow"] == "skipped"


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        ({"environment": "dev", "waves": ["apps"], "confirm": "prod"}, "confirm must be 'dev'"),
        (
            {"environment": "dev", "waves": ["shared"], "confirm": "dev"},
            "refusing to destroy the control plane (Argo CD, this Airflow and what they run on): "
            "monitoring, service-mesh; set include_control_plane",
        ),
    ],
)
def test_destroy_guards_refuse_and_delete_nothing(airflow_db, platform, capfd, conf, why) -> None:
    """A refusal fails the guard task and deletes nothing; every refusal's wording is checked on the
    guard itself in tests/unit/lifecycle/test_destroy.py::test_refusals."""
    platform(conf["environment"])
    dag_run, states = run("platform_destroy", **conf)
    assert dag_run.state == "failed" and states["guard"] == "failed"
    assert why in capfd.readouterr().out
    assert len(ArgoCDHook().list_applications()["items"]) == 28
    assert all(_deleted_at(c.name) == "" for c in default_catalog().components)


def test_destroy_reports_an_app_stuck_on_finalizers(airflow_db, platform) -> None:
    platform(top={"defaults": {"delete_seconds": 0.5}}, data_control={"delete_seconds": 3600})
    dag_run, states = run(
        "platform_destroy", components=["data-control"], confirm="dev", stuck_after_seconds=10
    )
    assert dag_run.state == "failed" and states["base.data-control"] == "failed"
    [row] = report("platform_destroy", dag_run.run_id, "destroy")["apps"]
    assert not row["gone"] and "stuck on finalizers (resources-finalizer.argocd.argoproj.io)" in row["detail"]
    assert "resources still present: apps/Deployment base-data-control/data-control, Service" in row["detail"]


def test_destroy_with_the_control_plane_tears_it_down_last(airflow_db, platform) -> None:
    platform(top={"defaults": {"delete_seconds": 0.2, "resources": [{"kind": "Service"}]}})
    dag_run, states = run(
        "platform_destroy", waves=["orchestration", "apps", "base"], confirm="dev", include_control_plane=True
    )
    assert dag_run.state == "success", states
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    last_ordinary = max(
        ti.end_date
        for tid, ti in tis.items()
        if ti.state == "success"
        and "airflow" not in tid
        and tid.split(".")[0] in {"orchestration", "apps", "base"}
    )
    assert tis["orchestration.airflow"].start_date >= last_ordinary
    assert not ArgoCDHook().application_exists("airflow")
    assert ArgoCDHook().application_exists("monitoring")  # not selected: the shared wave stays


# ---- params are checked at trigger time ----------------------------------------------------
@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        ("platform_validate", {"scope": "everything"}),
        ("platform_drift", {"environment": "qa"}),
        ("platform_rollback", {"to": "last"}),
        ("platform_rollback", {"wave": "bogus"}),
        ("platform_destroy", {"stuck_after_seconds": 1}),
        ("platform_destroy", {"components": ["ghost"]}),
        ("platform_destroy", {"allow_prod": "yes"}),
    ],
)
def test_bad_params_are_refused_before_a_run_exists(dag_id: str, conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag(dag_id).params)
    with pytest.raises(ParamValidationError):
        params.update(conf)
        params.validate()


def test_rendered_desired_state_is_what_drift_compares() -> None:
    env = load_environment("dev")
    app = render_application(default_catalog().component("monitoring"), env)
    assert app["spec"]["source"]["targetRevision"] == env.target_revision

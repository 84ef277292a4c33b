"""platform_deploy under dag.test() against the Argo CD simulator."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from base_platform.argocd.actions import start_rollback
from base_platform.argocd.application import parse_pin
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog
from base_platform.catalog.models import Wave
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
FAST = {"defaults": {"sync_seconds": 0.3, "healthy_after_seconds": 0.6}}


@pytest.fixture(autouse=True)
def vault(start_vault):
    """The core wave's gate checks Vault's health through vault_default."""
    return start_vault()


def deploy_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "platform_deploy.py")).dags["platform_deploy"]


def run(**conf: Any):
    dag_run = deploy_dag().test(run_conf={"environment": "dev"} | conf)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return dag_run, states


def names(wave: Wave) -> list[str]:
    return [c.name for c in default_catalog().components if c.wave is wave]


def existing(*waves: Wave, **overrides: dict[str, str]) -> dict[str, dict[str, str]]:
    """Apps already deployed and healthy at the overlay's revision, as the simulator's `existing`."""
    catalog = default_catalog()
    apps = {n: {"revision": "main", "project": catalog.component(n).project} for w in waves for n in names(w)}
    for name, fields in overrides.items():
        apps[name.replace("_", "-")] = apps.get(name.replace("_", "-"), {}) | fields
    return apps


def test_all_waves_deploy_and_a_second_run_changes_nothing(airflow_db, start_simulator) -> None:
    start_simulator(FAST)
    dag_run, states = run()
    assert dag_run.state == "success", {k: v for k, v in states.items() if v != "success"}
    assert len(states) == 28 + 5 + 3  # one task per component, a gate per wave, plan, approve, summary
    apps = {a["metadata"]["name"]: a for a in ArgoCDHook().list_applications()["items"]}
    assert set(apps) == {c.name for c in default_catalog().components}
    assert all(a["status"]["health"]["status"] == "Healthy" for a in apps.values())
    assert all(states[f"{w.value}.gate"] == "success" for w in Wave)

    again, states = run(waves=["core"])  # a second run is a success that changes nothing
    after = {a["metadata"]["name"]: a for a in ArgoCDHook().list_applications()["items"]}
    assert again.state == "success", states
    assert {n: a["status"]["sync"]["revision"] for n, a in after.items()} == {
        n: a["status"]["sync"]["revision"] for n, a in apps.items()
    }


def test_a_degraded_component_fails_its_branch_only(airflow_db, start_simulator, capfd) -> None:
    start_simulator(FAST | {"apps": {"monitoring": {"outcome": "Degraded"}}})
    dag_run, states = run(waves=["core", "shared"])
    assert dag_run.state == "failed"
    assert states["shared.monitoring"] == "failed"
    assert states["shared.logging"] == "upstream_failed"  # logging depends on monitoring
    assert states["shared.service-mesh"] == "success"  # independent branch finished
    assert all(states[f"core.{n}"] == "success" for n in names(Wave.CORE))
    assert states["summary"] == "failed"
    out = capfd.readouterr().out
    assert "monitoring: failed: " in out and "Degraded" in out
    assert "logging: blocked by a failed dependency" in out


@pytest.mark.parametrize("offset", [-90, 0, 90])
def test_stale_reads_never_pass_whatever_the_controllers_clock(airflow_db, start_simulator, offset) -> None:
    """The controller's clock 90 s behind or ahead of ours changes nothing: no wait hangs and none
    passes on the stale pre-sync state (which, at the old revision, the revision gate would refuse)."""
    sim = start_simulator(
        {
            "clock_offset_seconds": offset,
            "defaults": {
                "sync_seconds": 0.3,
                "healthy_after_seconds": 0.6,
                "stale_read_seconds": 1.2,  # two polls of 0.5 s see the state from before the sync
                "reconcile_lag_seconds": 0.2,
            },
            "existing": existing(Wave.CORE),
        }
    )
    dag_run, states = run(waves=["core"], target_revision="v2")
    assert dag_run.state == "success", states
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    for name in names(Wave.CORE):
        outcome = tis[f"core.{name}"].xcom_pull(task_ids=f"core.{name}", key="outcome")
        assert "health=Healthy" in outcome["verdict"], outcome
    with sim.client() as client:
        app = client.get("/api/v1/applications/vault").json()
    assert app["status"]["sync"]["revision"] == app["status"]["operationState"]["syncResult"]["revision"]
    assert len(app["status"]["history"]) == 2  # one sync, not a stale pass and a second sync


def test_apps_alone_fails_naming_unhealthy_dependencies(airflow_db, start_simulator, capfd) -> None:
    start_simulator(
        FAST
        | {"existing": existing(Wave.CORE, Wave.SHARED, Wave.ORCHESTRATION, airflow={"health": "Degraded"})}
    )
    dag_run, states = run(waves=["apps"])
    assert dag_run.state == "failed"
    assert states["plan"] == "failed"
    assert not ArgoCDHook().application_exists("platform-ui")  # nothing was deployed
    out = capfd.readouterr().out
    assert "dependencies outside the selection are not Synced and Healthy: airflow" in out


def test_dry_run_changes_nothing(airflow_db, start_simulator) -> None:
    start_simulator(FAST | {"existing": {"argocd": {"revision": "main"}}})
    before = ArgoCDHook().get_application("argocd")
    dag_run, states = run(waves=["core"], dry_run=True)
    assert dag_run.state == "success", states
    assert states["core.argocd"] == "success"  # dry-run sync of the existing app
    assert states["core.vault"] == "success"  # would be created: nothing to dry-run
    assert not ArgoCDHook().application_exists("vault")
    after = ArgoCDHook().get_application("argocd")
    assert after["spec"] == before["spec"] and after["status"]["history"] == before["status"]["history"]


def test_rollback_on_failure_restores_the_previous_revision(airflow_db, start_simulator, capfd) -> None:
    start_simulator(
        FAST
        | {"existing": existing(Wave.CORE), "apps": {"vault": {"outcome_by_revision": {"v2": "Degraded"}}}}
    )
    old = ArgoCDHook().get_application("vault")["status"]["sync"]["revision"]
    dag_run, states = run(
        components=["vault"], waves=["core"], target_revision="v2", rollback_on_failure=True
    )
    assert dag_run.state == "failed" and states["core.vault"] == "failed"
    app = ArgoCDHook().get_application("vault")
    assert (app["status"]["sync"]["revision"], app["status"]["health"]["status"]) == (old, "Healthy")
    pin = parse_pin(app)
    assert pin is not None and pin["revision"] == old  # pinned: the drift heal leaves it alone
    assert "rolled back to history 0" in capfd.readouterr().out


def test_a_failed_gate_stops_every_later_wave(airflow_db, start_simulator, caplog) -> None:
    """Staging's core gate refuses an AppProject that allows any destination; shared never starts."""
    start_simulator(FAST | {"lock_default_project": False})  # the default project allows '*'
    dag_run, states = run(environment="staging", waves=["core", "shared"])
    assert dag_run.state == "failed"
    assert all(states[f"core.{n}"] == "success" for n in names(Wave.CORE))
    assert states["core.gate"] == "failed"
    assert all(states[f"shared.{n}"] == "upstream_failed" for n in names(Wave.SHARED))
    assert states["shared.gate"] == "upstream_failed"
    assert not any(ArgoCDHook().application_exists(n) for n in names(Wave.SHARED))  # never synced
    assert "rollout stopped by the failed gate of wave core" in caplog.text
    assert "monitoring                     stopped by the failed core gate" in caplog.text


def test_a_deploy_clears_the_pin_a_rollback_left(airflow_db, start_simulator) -> None:
    start_simulator(FAST | {"existing": existing(Wave.CORE)})
    hook = ArgoCDHook()
    hook.sync_application("vault", revision="v2")
    _wait_synced(hook, "vault", history=2)
    start_rollback(hook, "vault", 0)
    assert parse_pin(hook.get_application("vault")) is not None
    dag_run, states = run(components=["vault"], waves=["core"])
    assert dag_run.state == "success", states
    assert parse_pin(hook.get_application("vault")) is None


def _wait_synced(hook: ArgoCDHook, name: str, history: int) -> None:
    deadline = time.monotonic() + 20
    while len(hook.get_application(name)["status"]["history"]) < history:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize(
    "conf",
    [
        {"environment": "qa"},
        {"waves": ["core", "bogus"]},
        {"waves": []},
        {"components": ["vault", "no-such-thing"]},
        {"target_revision": "main; rm -rf /"},
        {"dry_run": "yes"},
    ],
)
def test_bad_params_are_refused_before_a_run_exists(conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(deploy_dag().params)
    with pytest.raises(ParamValidationError):
        params.update(conf)  # what the API does with a run's conf, before the run exists
        params.validate()


def test_good_params_validate() -> None:
    params = copy.deepcopy(deploy_dag().params)
    params.update({"environment": "prod", "waves": ["apps"], "components": ["platform-ui"]})
    assert params.validate()["components"] == ["platform-ui"]

"""The smoke DAG under dag.test() against the simulator: passes when Healthy, fails when Degraded."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _smoke_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "argocd_smoke.py"))
    return bag.dags["argocd_smoke"]


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_smoke_dag_syncs_and_waits(airflow_db, start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 1, "healthy_after_seconds": 2, "stale_read_seconds": 1}})
    run = _smoke_dag().test()
    assert run.state == "success", _states(run)
    assert _states(run) == {"sync": "success"}  # upsert, sync and the deferred wait, in one task


def test_smoke_dag_fails_with_the_simulators_message_when_degraded(
    airflow_db, start_simulator, capfd
) -> None:
    start_simulator("degraded.yaml")
    run = _smoke_dag().test()
    assert run.state == "failed"
    assert _states(run)["sync"] == "failed"
    out = capfd.readouterr().out
    assert "AirflowFailException: Degraded after progress" in out
    assert 'Deployment "smoke-app" exceeded its progress deadline' in out

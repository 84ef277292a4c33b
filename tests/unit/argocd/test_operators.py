"""Operators against the simulator: what they send and what they hand to the sensor."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import (
    ArgoCDDeleteApplicationOperator,
    ArgoCDRollbackApplicationOperator,
    ArgoCDSyncApplicationOperator,
    ArgoCDUpsertApplicationOperator,
    ArgoCDUpsertProjectOperator,
    pick_history_entry,
)
from tests.conftest import FAST
from tests.unit.argocd.test_hooks import APP


def test_upsert_then_sync_hands_request_time_and_revision(start_simulator) -> None:
    start_simulator(FAST)
    assert ArgoCDUpsertApplicationOperator(task_id="u", application=APP).execute({})["app_name"] == "web"
    before = datetime.now().astimezone().replace(microsecond=0)
    out = ArgoCDSyncApplicationOperator(task_id="s", app_name="web").execute({})
    assert out["revision"] == "main"  # defaults to the app's targetRevision
    assert datetime.fromisoformat(out["requested_at"]) >= before
    assert datetime.fromisoformat(out["requested_at"]).microsecond == 0
    assert out["dry_run"] is False


def test_project_upsert_is_idempotent(start_simulator) -> None:
    start_simulator(FAST)
    project = {
        "metadata": {"name": "platform-core"},
        "spec": {
            "sourceRepos": ["https://git.example.com/x.git"],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "vault"}],
        },
    }
    op = ArgoCDUpsertProjectOperator(task_id="p", project=project)
    assert op.execute({}) == op.execute({}) == "platform-core"


def _deploy_twice() -> None:
    hook = ArgoCDHook()
    hook.upsert_application(APP)
    for revision in ("v1", "v2"):
        hook.sync_application("web", revision=revision)
        time.sleep(1.2)


def test_rollback_to_previous(start_simulator) -> None:
    start_simulator(FAST)
    _deploy_twice()
    out = ArgoCDRollbackApplicationOperator(task_id="r", app_name="web").execute({})
    assert out["history_id"] == 1


def test_rollback_refuses_with_automated_sync_unless_allowed(start_simulator) -> None:
    start_simulator(FAST)
    _deploy_twice()
    auto = {"metadata": APP["metadata"], "spec": APP["spec"] | {"syncPolicy": {"automated": {"prune": True}}}}
    ArgoCDHook().upsert_application(auto)
    with pytest.raises(AirflowFailException, match="automated sync on"):
        ArgoCDRollbackApplicationOperator(task_id="r", app_name="web", to=1).execute({})
    out = ArgoCDRollbackApplicationOperator(
        task_id="r", app_name="web", to=1, disable_auto_sync=True
    ).execute({})
    assert out["history_id"] == 1
    assert "automated" not in ArgoCDHook().get_application("web")["spec"]["syncPolicy"]


def test_pick_history_entry_names_known_ids() -> None:
    app = {"metadata": {"name": "web"}, "status": {"history": [{"id": 1}, {"id": 2}]}}
    assert pick_history_entry(app, "previous") == {"id": 1}
    with pytest.raises(AirflowFailException, match=r"known ids: \[1, 2\]"):
        pick_history_entry(app, 7)


def test_delete_is_idempotent(start_simulator) -> None:
    start_simulator(FAST)
    ArgoCDHook().upsert_application(APP)
    assert ArgoCDDeleteApplicationOperator(task_id="d", app_name="web").execute({}) is True
    assert ArgoCDDeleteApplicationOperator(task_id="d", app_name="web").execute({}) is False

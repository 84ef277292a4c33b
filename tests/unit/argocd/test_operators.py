"""Operators against the simulator: each starts its own operation and waits for exactly that one."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from base_platform.argocd.actions import ActionError, pick_history_entry, start_rollback, start_sync
from base_platform.argocd.application import parse_pin
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import (
    ArgoCDDeleteApplicationOperator,
    ArgoCDRollbackApplicationOperator,
    ArgoCDSyncApplicationOperator,
)
from base_platform.argocd.triggers import ArgoCDApplicationDeletedTrigger, ArgoCDApplicationTrigger
from tests.conftest import FAST
from tests.unit.argocd.test_hooks import APP


def sync_op(**kwargs) -> ArgoCDSyncApplicationOperator:
    defaults: dict[str, Any] = {"task_id": "s", "app_name": "web", "application": APP, "poll_interval": 0.2}
    return ArgoCDSyncApplicationOperator(**(defaults | kwargs))


@pytest.mark.slow
def test_upserts_syncs_and_defers_with_the_mark_of_the_operation_before(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 5}, "existing": {"web": {"revision": "main"}}})
    before = ArgoCDHook().get_application("web")
    with pytest.raises(TaskDeferred) as deferred:
        sync_op(revision="v2", deferrable=True).execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ArgoCDApplicationTrigger) and trigger.revision == "v2"
    assert trigger.after is not None
    assert trigger.after["started_at"] == ""  # the existing app never ran an operation
    assert trigger.after["history_id"] == max(h["id"] for h in before["status"]["history"])
    assert deferred.value.kwargs is not None
    started = deferred.value.kwargs["started"]
    assert started["previous_history_id"] == 0 and deferred.value.method_name == "execute_complete"


def a_try(run_id: str = "manual__1") -> Any:
    """The context of one try of task ``core.web``: what Airflow gives every try of it in that run."""
    return {"ti": SimpleNamespace(dag_id="platform_deploy", run_id=run_id, task_id="core.web", map_index=-1)}


def history_ids() -> list[int]:
    return [h["id"] for h in ArgoCDHook().get_application("web")["status"]["history"]]


@pytest.mark.slow
def test_a_retry_watches_the_sync_an_earlier_try_started(start_simulator) -> None:
    """The first try's trigger died mid-wait: the next try finds its sync running, and waits for
    exactly that one; a try after it finished finds it done. Argo CD synced once."""
    slow = {"sync_seconds": 2, "healthy_after_seconds": 0.2}
    start_simulator({"defaults": slow, "existing": {"web": {"revision": "main"}}})
    with pytest.raises(TaskDeferred) as first:
        sync_op(revision="v2", deferrable=True).execute(a_try())
    with pytest.raises(TaskDeferred) as second:
        sync_op(revision="v2", deferrable=True).execute(a_try())
    assert isinstance(first.value.trigger, ArgoCDApplicationTrigger)
    assert isinstance(second.value.trigger, ArgoCDApplicationTrigger)
    assert second.value.trigger.after == first.value.trigger.after
    out = sync_op(revision="v2", deferrable=False).execute(a_try())
    assert out["revision"] == "v2" and "health=Healthy" in out["verdict"]
    assert out["previous_history_id"] == 0
    assert history_ids() == [0, 1]  # the existing deployment, and one sync


@pytest.mark.slow
def test_a_sync_is_started_again_by_another_run_or_after_it_failed(start_simulator) -> None:
    start_simulator(FAST)
    sync_op(deferrable=False).execute(a_try())
    sync_op(deferrable=False).execute(a_try("manual__2"))
    assert history_ids() == [0, 1]
    start_simulator({"defaults": FAST["defaults"], "apps": {"web": {"outcome": "SyncFailed"}}})
    started_at = []
    for _ in range(2):
        with pytest.raises(AirflowFailException, match="failed to apply"):
            sync_op(deferrable=False).execute(a_try())
        started_at.append(ArgoCDHook().get_application("web")["status"]["operationState"]["startedAt"])
        time.sleep(1.1)  # Argo CD's times have a resolution of one second
    assert started_at[0] != started_at[1]


@pytest.mark.slow
def test_waits_in_process_when_not_deferrable(start_simulator) -> None:
    start_simulator(FAST)
    out = sync_op(deferrable=False).execute({})
    assert out["revision"] == "main" and out["dry_run"] is False  # the app's targetRevision
    assert "health=Healthy" in out["verdict"]


def test_a_dry_run_of_a_new_app_writes_nothing(start_simulator) -> None:
    start_simulator(FAST)
    out = sync_op(is_dry_run=True, deferrable=False).execute({})
    assert "would be created" in out["verdict"]
    assert not ArgoCDHook().application_exists("web")


@pytest.mark.slow
def test_a_sync_past_its_deadline_is_terminated_then_fails(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 60}})
    with pytest.raises(AirflowFailException, match=r"timed out at .*terminated the running operation"):
        sync_op(deferrable=False, wait_timeout=1).execute({})
    op = ArgoCDHook().get_application("web")["status"]["operationState"]
    assert (op["phase"], op["message"]) == ("Failed", "Operation terminated")


def test_a_timeout_event_terminates_the_operation(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 60}})
    hook = ArgoCDHook()
    hook.upsert_application(APP)
    started = start_sync(hook, "web")
    with pytest.raises(AirflowFailException, match="terminated the running operation"):
        sync_op().execute_complete({}, {"status": "timeout", "message": "timed out"}, started.to_dict())
    assert "operation" not in hook.get_application("web")


@pytest.mark.parametrize(("status", "error"), [("failed", AirflowFailException), ("error", AirflowException)])
def test_execute_complete_fails_final_or_retryable(start_simulator, status: str, error: type) -> None:
    start_simulator(FAST)
    started = {"app_name": "web", "mark": {}, "revision": "main"}
    with pytest.raises(error, match="boom"):
        sync_op().execute_complete({}, {"status": status, "message": "boom"}, started)


def _deploy_twice() -> None:
    hook = ArgoCDHook()
    hook.upsert_application(APP)
    for revision in ("v1", "v2"):
        hook.sync_application("web", revision=revision)
        time.sleep(1.2)


@pytest.mark.slow
def test_rollback_to_previous_waits_for_it_and_pins_the_app(start_simulator) -> None:
    start_simulator(FAST)
    _deploy_twice()
    out = ArgoCDRollbackApplicationOperator(
        task_id="r", app_name="web", deferrable=False, poll_interval=0.2
    ).execute({})
    assert out["history_id"] == 0 and "health=Healthy" in out["verdict"]  # Argo CD numbers from 0
    pin = parse_pin(ArgoCDHook().get_application("web"))
    assert pin is not None and pin["at"]
    assert {k: pin[k] for k in ("history", "revision")} == {"history": "0", "revision": out["revision"]}
    app = ArgoCDHook().get_application("web")
    assert app["status"]["sync"]["revision"] == out["revision"]


@pytest.mark.slow
def test_rollback_is_retried_while_another_operation_is_in_progress(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 1.0, "healthy_after_seconds": 0.1}})
    _deploy_twice()
    ArgoCDHook().sync_application("web", revision="v3")  # still running for a second ...
    started, _ = start_rollback(ArgoCDHook(), "web", 0)  # ... so the rollback waits its turn
    assert started.history_id == 0
    assert started.mark.history_id == 2  # marked after the v3 sync ended, not while it ran


@pytest.mark.slow
def test_rollback_refuses_with_automated_sync_unless_allowed(start_simulator) -> None:
    start_simulator(FAST)
    _deploy_twice()
    auto = {"metadata": APP["metadata"], "spec": APP["spec"] | {"syncPolicy": {"automated": {"prune": True}}}}
    ArgoCDHook().upsert_application(auto)
    with pytest.raises(AirflowFailException, match="automated sync on"):
        ArgoCDRollbackApplicationOperator(task_id="r", app_name="web", to=1).execute({})
    out = ArgoCDRollbackApplicationOperator(
        task_id="r", app_name="web", to=1, disable_auto_sync=True, deferrable=False, poll_interval=0.2
    ).execute({})
    assert out["history_id"] == 1 and out["auto_sync_disabled"] is True
    assert "automated" not in ArgoCDHook().get_application("web")["spec"]["syncPolicy"]


def test_pick_history_entry_names_known_ids() -> None:
    app = {"metadata": {"name": "web"}, "status": {"history": [{"id": 1}, {"id": 2}]}}
    assert pick_history_entry(app, "previous") == {"id": 1}
    with pytest.raises(ActionError, match=r"known ids: \[1, 2\]"):
        pick_history_entry(app, 7)


def test_delete_is_idempotent(start_simulator) -> None:
    start_simulator(FAST)
    ArgoCDHook().upsert_application(APP)
    assert ArgoCDDeleteApplicationOperator(task_id="d", app_name="web").execute({}) is True
    assert ArgoCDDeleteApplicationOperator(task_id="d", app_name="web").execute({}) is False


def test_delete_waits_until_gone(start_simulator) -> None:
    start_simulator({"defaults": {"delete_seconds": 5}, "existing": {"web": {}}})
    with pytest.raises(TaskDeferred) as deferred:
        ArgoCDDeleteApplicationOperator(
            task_id="d", app_name="web", wait_for_completion=True, deferrable=True
        ).execute({})
    assert isinstance(deferred.value.trigger, ArgoCDApplicationDeletedTrigger)


def test_the_pin_keeps_the_apps_finalizers_and_labels() -> None:
    """Argo CD's upsert replaces the metadata it is sent: a pin must not drop the cascade finalizer."""
    from base_platform.argocd.actions import _pin
    from base_platform.argocd.application import PIN_ANNOTATION

    class RecordingArgoCD:
        """Stands in for Argo CD's API, recording what the upsert sends."""

        def __init__(self) -> None:
            self.sent: dict[str, Any] = {}

        def upsert_application(self, body: dict[str, Any], validate: bool = True) -> dict[str, Any]:
            self.sent = body
            return body

    app = {
        "metadata": {
            "name": "web",
            "namespace": "argocd",
            "labels": {"platform.base/wave": "core"},
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {"syncPolicy": {"automated": {"prune": True}}},
    }
    argocd = RecordingArgoCD()
    assert _pin(argocd, app, {"id": 1, "revision": "abc"}, disable_auto_sync=True) is True  # type: ignore[arg-type]
    metadata = argocd.sent["metadata"]
    assert metadata["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
    assert metadata["labels"] == {"platform.base/wave": "core"} and metadata["namespace"] == "argocd"
    assert "history=1 revision=abc" in metadata["annotations"][PIN_ANNOTATION]
    assert "automated" not in argocd.sent["spec"]["syncPolicy"]

"""ArgoCDApplicationSensor: defers when asked, pokes otherwise, fails on a failed or timed-out event."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from base_platform.argocd.actions import start_sync
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.sensors import ArgoCDApplicationSensor
from base_platform.argocd.triggers import ArgoCDApplicationTrigger
from tests.unit.argocd.test_hooks import APP


def _sync() -> dict:
    hook = ArgoCDHook()
    hook.upsert_application(APP)
    return start_sync(hook, "web", revision="main").mark.to_dict()


def test_defers_while_the_sync_runs(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 5}})
    sensor = ArgoCDApplicationSensor(
        task_id="wait", app_name="web", after=_sync(), revision="main", timeout=60, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert isinstance(deferred.value.trigger, ArgoCDApplicationTrigger)
    assert deferred.value.trigger.app_name == "web"
    assert deferred.value.method_name == "execute_complete"


def test_deferrable_follows_the_operators_default_deferrable_setting(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert ArgoCDApplicationSensor(task_id="wait", app_name="web").deferrable
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert not ArgoCDApplicationSensor(task_id="wait", app_name="web").deferrable


def test_does_not_defer_when_already_done(start_simulator) -> None:
    start_simulator({"existing": {"web": {"revision": "main"}}})
    sensor = ArgoCDApplicationSensor(task_id="wait", app_name="web", revision="main", deferrable=True)
    assert sensor.execute({}) is None


@pytest.mark.slow
def test_poke_mode_waits_then_passes(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 0.3, "healthy_after_seconds": 0.6}})
    sensor = ArgoCDApplicationSensor(
        task_id="wait", app_name="web", after=_sync(), revision="main", deferrable=False
    )
    assert sensor.poke({}) is False
    import time

    time.sleep(1.2)
    assert sensor.poke({}) is True


def test_poke_fails_fast_without_retry_on_degraded(start_simulator) -> None:
    start_simulator(
        {
            "defaults": {"sync_seconds": 0.2, "healthy_after_seconds": 0.4},
            "apps": {"web": {"outcome": "Degraded"}},
        }
    )
    sensor = ArgoCDApplicationSensor(
        task_id="wait",
        app_name="web",
        after=_sync(),
        revision="main",
        deferrable=False,
        poke_interval=0.2,
        timeout=30,
    )
    with pytest.raises(AirflowFailException, match="exceeded its progress deadline"):
        sensor.execute({})


@pytest.mark.parametrize(
    ("status", "error"),
    [("failed", AirflowFailException), ("timeout", AirflowFailException), ("error", AirflowException)],
)
def test_execute_complete_raises_unless_success(status: str, error: type[Exception]) -> None:
    sensor = ArgoCDApplicationSensor(task_id="wait", app_name="web")
    with pytest.raises(error, match="boom"):
        sensor.execute_complete({}, {"status": status, "message": "boom"})
    sensor.execute_complete({}, {"status": "success", "message": "ok"})  # does not raise


def test_every_handed_over_value_is_templated() -> None:
    """XComArgs in a field that is not templated reach the sensor as unrendered strings."""
    assert set(ArgoCDApplicationSensor.template_fields) >= {
        "app_name",
        "after",
        "revision",
        "is_dry_run",
        "selected_resources",
        "deadline",
    }


def test_poke_fails_after_the_deadline_naming_what_it_waited_for(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 30}})
    sensor = ArgoCDApplicationSensor(
        task_id="wait",
        app_name="web",
        after=_sync(),
        revision="main",
        deferrable=False,
        deadline="2000-01-01T00:00:00+00:00",
    )
    with pytest.raises(AirflowFailException, match=r"timed out at 2000-01-01.*operation in progress"):
        sensor.poke({})

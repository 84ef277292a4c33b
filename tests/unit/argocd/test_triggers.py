"""The Argo CD triggers: serialize round-trip, and run() against the simulator."""

from __future__ import annotations

import asyncio
import os

import pytest
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger

from base_platform.argocd.actions import start_sync
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.triggers import ArgoCDApplicationDeletedTrigger, ArgoCDApplicationTrigger
from base_platform.connections import aget_connection_patiently
from tests.conftest import FAST
from tests.unit.argocd.test_hooks import APP


def test_serialize_matches_init() -> None:
    trigger = ArgoCDApplicationTrigger(
        app_name="web",
        after={"started_at": "2026-11-26T10:00:00Z", "history_id": 3},
        revision="main",
        dry_run=True,
        selected_resources=[{"kind": "Deployment", "name": "web"}],
        degraded_grace_seconds=5,
        poll_interval=2,
        argocd_conn_id="other",
    )
    path, kwargs = trigger.serialize()
    assert path == "base_platform.argocd.triggers.ArgoCDApplicationTrigger"
    assert ArgoCDApplicationTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["argocd_conn_id"] == "other" and kwargs["selected_resources"] == [
        {"kind": "Deployment", "name": "web"}
    ]


def _sync(revision: str = "main") -> dict:
    """Start a sync as the operator does; the mark of the operation before it."""
    hook = ArgoCDHook()
    hook.upsert_application(APP)
    return start_sync(hook, "web", revision=revision).mark.to_dict()


async def _first_event(trigger: BaseTrigger, timeout: float = 20) -> dict:
    event = await asyncio.wait_for(anext(trigger.run()), timeout)
    return dict(event.payload)


@pytest.mark.slow
async def test_fires_success_once_synced_and_healthy(start_simulator) -> None:
    start_simulator(
        {"defaults": {"sync_seconds": 0.5, "healthy_after_seconds": 1.0, "stale_read_seconds": 0.8}}
    )
    mark = await asyncio.to_thread(_sync)
    event = await _first_event(ArgoCDApplicationTrigger("web", mark, "main", poll_interval=0.2))
    assert event["status"] == "success", event
    app = await asyncio.to_thread(ArgoCDHook().get_application, "web")
    assert app["status"]["health"]["status"] == "Healthy"


@pytest.mark.slow
async def test_fires_failed_with_resource_messages_on_degraded(start_simulator) -> None:
    start_simulator({"defaults": FAST["defaults"], "apps": {"web": {"outcome": "Degraded"}}})
    mark = await asyncio.to_thread(_sync)
    event = await _first_event(ArgoCDApplicationTrigger("web", mark, "main", poll_interval=0.2))
    assert event["status"] == "failed"
    assert "Degraded after progress" in event["message"]
    assert 'Deployment "web" exceeded its progress deadline' in event["message"]


@pytest.mark.slow
async def test_fires_failed_on_sync_failed(start_simulator) -> None:
    start_simulator({"defaults": FAST["defaults"], "apps": {"web": {"outcome": "SyncFailed"}}})
    mark = await asyncio.to_thread(_sync)
    event = await _first_event(ArgoCDApplicationTrigger("web", mark, "main", poll_interval=0.2))
    assert event["status"] == "failed"
    assert "one or more objects failed to apply" in event["message"]


async def test_fires_failed_for_an_unknown_app(start_simulator) -> None:
    start_simulator(FAST)
    event = await _first_event(ArgoCDApplicationTrigger("ghost", None, None, poll_interval=0.2))
    assert event["status"] == "failed" and "permission denied" in event["message"]


@pytest.mark.slow
async def test_a_restarted_trigger_reaches_the_same_verdict(start_simulator) -> None:
    """A trigger keeps no state: a fresh instance from serialize() mid-wait still succeeds."""
    start_simulator({"defaults": {"sync_seconds": 1.0, "healthy_after_seconds": 2.0}})
    mark = await asyncio.to_thread(_sync)
    first = ArgoCDApplicationTrigger("web", mark, "main", poll_interval=0.2)
    run = first.run()
    task = asyncio.ensure_future(run.asend(None))
    await asyncio.sleep(0.5)
    task.cancel()  # the triggerer went away mid-wait
    _, kwargs = first.serialize()
    event = await _first_event(ArgoCDApplicationTrigger(**kwargs))
    assert event["status"] == "success"


async def test_fires_timeout_at_the_deadline_with_the_last_reason(start_simulator) -> None:
    """``timeout``, not ``failed``: the operator then terminates the operation that still runs."""
    start_simulator({"defaults": {"sync_seconds": 30}})
    mark = await asyncio.to_thread(_sync)
    past = "2000-01-01T00:00:00+00:00"
    event = await _first_event(
        ArgoCDApplicationTrigger("web", mark, "main", deadline=past, poll_interval=0.2)
    )
    assert event["status"] == "timeout"
    assert "timed out at" in event["message"] and "operation in progress" in event["message"]


@pytest.mark.slow
async def test_a_controller_clock_far_behind_or_ahead_changes_no_verdict(start_simulator) -> None:
    """The wait compares the server's timestamps only with each other, never with ours."""
    for offset in (-3600, 3600):
        start_simulator(
            {
                "clock_offset_seconds": offset,
                "defaults": {"sync_seconds": 0.3, "healthy_after_seconds": 0.6, "stale_read_seconds": 1.0},
                "existing": {"web": {"revision": "main"}},
            }
        )
        mark = await asyncio.to_thread(_sync, "v2")
        event = await _first_event(ArgoCDApplicationTrigger("web", mark, "v2", poll_interval=0.2))
        assert event["status"] == "success", (offset, event)
        app = await asyncio.to_thread(ArgoCDHook().get_application, "web")
        assert app["status"]["operationState"]["syncResult"]["revision"] == app["status"]["sync"]["revision"]


async def test_a_transient_failure_is_a_retryable_error(start_simulator) -> None:
    sim = start_simulator(FAST)
    sim.inject("/api/v1/applications/web", 503, count=50)
    event = await _first_event(ArgoCDApplicationTrigger("web", None, None, poll_interval=0.2), timeout=60)
    assert event["status"] == "error" and "503" in event["message"]


@pytest.mark.slow
async def test_a_connection_lookup_failing_for_a_while_is_asked_again(start_simulator, monkeypatch) -> None:
    """While Postgres restarts, the Task SDK says a connection "isn't defined"; the trigger asks
    again instead of failing its task (whose retry would sync a second time)."""
    start_simulator(FAST)
    mark = await asyncio.to_thread(_sync)
    conn = os.environ["AIRFLOW_CONN_ARGOCD_DEFAULT"]
    monkeypatch.delenv("AIRFLOW_CONN_ARGOCD_DEFAULT")
    trigger = ArgoCDApplicationTrigger("web", mark, "main", poll_interval=0.2)
    waiting = asyncio.ensure_future(_first_event(trigger))
    await asyncio.sleep(1.0)
    assert not waiting.done()
    monkeypatch.setenv("AIRFLOW_CONN_ARGOCD_DEFAULT", conn)
    assert (await waiting)["status"] == "success"


async def test_a_connection_that_stays_missing_still_fails() -> None:
    with pytest.raises(AirflowNotFoundException, match="`nowhere` isn't defined"):
        await aget_connection_patiently("nowhere", patience=0.5, pause=0.1)


@pytest.mark.slow
async def test_deleted_trigger_fires_success_once_gone(start_simulator) -> None:
    start_simulator({"defaults": {"delete_seconds": 1.0}, "existing": {"web": {}}})
    await asyncio.to_thread(ArgoCDHook().delete_application, "web")
    trigger = ArgoCDApplicationDeletedTrigger(app_name="web", stuck_after_seconds=30, poll_interval=0.2)
    assert await _first_event(trigger) == {"status": "success", "message": "deleted"}


@pytest.mark.slow
async def test_deleted_trigger_reports_stuck_finalizers_and_a_new_triggerer_agrees(start_simulator) -> None:
    """Stuck is timed on the trigger's own clock: a restarted triggerer times it again, and agrees."""
    start_simulator({"defaults": {"delete_seconds": 3600}, "existing": {"web": {}}})
    await asyncio.to_thread(ArgoCDHook().delete_application, "web")
    first = ArgoCDApplicationDeletedTrigger(app_name="web", stuck_after_seconds=1, poll_interval=0.2)
    path, kwargs = first.serialize()
    assert path == "base_platform.argocd.triggers.ArgoCDApplicationDeletedTrigger"
    for trigger in (first, ArgoCDApplicationDeletedTrigger(**kwargs)):
        event = await _first_event(trigger)
        assert event["status"] == "failed"
        assert "stuck on finalizers (resources-finalizer.argocd.argoproj.io)" in event["message"]
        assert "resources still present: apps/Deployment default/web, Service default/web" in event["message"]

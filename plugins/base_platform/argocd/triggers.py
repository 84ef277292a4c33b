"""Triggers that watch one Argo CD Application until the operation we started is really done,
or until a deleted app is gone.

They run in the triggerer, which never loads the DAG bundle, so they live in ``plugins/`` and
take plain values only. They keep nothing between runs that a verdict needs: the operation is
recognised by the mark taken before it started, so a restarted triggerer resumes with the same
verdicts (its Degraded grace and stuck timers start again: later, never sooner).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from airflow.triggers.base import BaseTrigger, TriggerEvent

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDAsyncHook
from base_platform.argocd.status import (
    OperationMark,
    Outcome,
    ResourceKey,
    Seen,
    WaitSpec,
    evaluate,
    evaluate_deletion,
    parse_time,
)

# The triggerer routes structlog events (not stdlib logging) into each task's trigger log.
log = structlog.get_logger(logger_name=__name__)


def build_wait_spec(
    after: Mapping[str, Any] | None,
    revision: str | None,
    dry_run: bool,
    resources: Sequence[dict[str, Any]] | None,
    degraded_grace_seconds: float,
) -> WaitSpec:
    """The :class:`WaitSpec` shared by the sensor's poke, the operator and the trigger."""
    return WaitSpec(
        after=OperationMark.from_dict(after) if after is not None else None,
        revision=revision or None,
        dry_run=dry_run,
        resources=tuple(ResourceKey.from_dict(r) for r in resources or ()),
        degraded_grace=timedelta(seconds=degraded_grace_seconds),
    )


def past_deadline(deadline: str | None) -> bool:
    """The deadline is Airflow's own time (worker and triggerer), never the cluster's."""
    parsed = parse_time(deadline)
    return parsed is not None and datetime.now(UTC) >= parsed


def timeout_message(app_name: str, deadline: str | None, last_reason: str) -> str:
    return f"app {app_name!r}: timed out at {deadline}; still waiting: {last_reason}"


class _PlainTrigger(BaseTrigger):
    """A trigger whose ``__init__`` keeps each argument under its own name, so it serializes
    exactly what it takes: plain values only, the triggerer never loads the DAG."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return f"{type(self).__module__}.{type(self).__qualname__}", {n: getattr(self, n) for n in names}


class ArgoCDApplicationTrigger(_PlainTrigger):
    """Poll one Application and fire once with ``success``, ``failed``, ``timeout`` or ``error``.

    ``failed`` is final (the operation failed, or Argo CD refused the request); ``timeout``
    means the deadline passed while the operation still ran, so the task can terminate it;
    ``error`` is an infrastructure problem that Airflow's retries may fix.

    :param app_name: the Argo CD Application.
    :param after: the :class:`OperationMark` (as a dict) taken before our operation; None
        gates on the current state only.
    :param revision: the revision asked for.
    :param dry_run: the operation was a dry run.
    :param selected_resources: optional selection of resources (``group, kind, namespace, name``).
    :param degraded_grace_seconds: Degraded is tolerated this long when no progress was seen.
    :param deadline: ISO time after which the wait gives up (restart-safe, unlike a relative timeout).
    :param poll_interval: seconds between polls.
    :param argocd_conn_id: Airflow connection to Argo CD.
    """

    def __init__(
        self,
        app_name: str,
        after: dict[str, Any] | None = None,
        revision: str | None = None,
        dry_run: bool = False,
        selected_resources: list[dict[str, Any]] | None = None,
        degraded_grace_seconds: float = 60.0,
        deadline: str | None = None,
        poll_interval: float = 5.0,
        argocd_conn_id: str = ArgoCDAsyncHook.default_conn_name,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.app_name = app_name
        self.after = after
        self.revision = revision
        self.dry_run = dry_run
        self.selected_resources = selected_resources
        self.degraded_grace_seconds = degraded_grace_seconds
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.argocd_conn_id = argocd_conn_id

    def _event(self, status: str, message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "message": message, "app_name": self.app_name})

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        spec = build_wait_spec(
            self.after, self.revision, self.dry_run, self.selected_resources, self.degraded_grace_seconds
        )
        seen = Seen()
        await log.ainfo("Watching Argo CD app %s until its new operation is done", self.app_name)
        async with ArgoCDAsyncHook(argocd_conn_id=self.argocd_conn_id) as hook:
            while True:
                try:
                    app = await hook.get_application(self.app_name)
                except (ArgoCDAPIError, httpx.HTTPError) as exc:
                    permanent = isinstance(exc, ArgoCDAPIError) and exc.is_permanent
                    yield self._event("failed" if permanent else "error", f"app {self.app_name!r}: {exc}")
                    return
                verdict = evaluate(app, spec, seen)
                seen = verdict.seen
                if verdict.outcome is not Outcome.WAITING:
                    yield self._event("success" if verdict.done else "failed", verdict.reason)
                    return
                if past_deadline(self.deadline):
                    yield self._event(
                        "timeout", timeout_message(self.app_name, self.deadline, verdict.reason)
                    )
                    return
                await log.ainfo("Argo CD app %s: %s", self.app_name, verdict.reason)
                await asyncio.sleep(self.poll_interval)


class ArgoCDApplicationDeletedTrigger(_PlainTrigger):
    """Poll until a deleted Application is gone (``success``) or stuck on finalizers (``failed``).

    The list endpoint answers for a missing app (``get`` would say 403). Stuck is timed from
    when this trigger first saw the deletion, on its own clock.
    """

    def __init__(
        self,
        app_name: str,
        stuck_after_seconds: float = 300.0,
        poll_interval: float = 5.0,
        argocd_conn_id: str = ArgoCDAsyncHook.default_conn_name,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.app_name = app_name
        self.stuck_after_seconds = stuck_after_seconds
        self.poll_interval = poll_interval
        self.argocd_conn_id = argocd_conn_id

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        stuck_after = timedelta(seconds=self.stuck_after_seconds)
        first_seen = time.monotonic()
        async with ArgoCDAsyncHook(argocd_conn_id=self.argocd_conn_id) as hook:
            while True:
                try:
                    items = (await hook.list_applications(name=self.app_name)).get("items") or []
                except (ArgoCDAPIError, httpx.HTTPError) as exc:
                    yield TriggerEvent({"status": "error", "message": f"app {self.app_name!r}: {exc}"})
                    return
                verdict = evaluate_deletion(
                    items[0] if items else None, stuck_after, time.monotonic() - first_seen
                )
                if verdict.outcome is not Outcome.WAITING:
                    status = "success" if verdict.done else "failed"
                    yield TriggerEvent({"status": status, "message": verdict.reason})
                    return
                await log.ainfo("Argo CD app %s: %s", self.app_name, verdict.reason)
                await asyncio.sleep(self.poll_interval)

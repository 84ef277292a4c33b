"""Trigger that watches one Argo CD Application until the sync we asked for is really done.

It runs in the triggerer, which never loads the DAG bundle, so it lives in ``plugins/`` and
takes plain values only. It keeps no state between runs: ``seen`` lives inside ``run()``,
and the Degraded grace period is measured from the server's own timestamps, so a restarted
triggerer resumes with the same verdicts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from airflow.triggers.base import BaseTrigger, TriggerEvent

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDAsyncHook
from base_platform.argocd.status import (
    Outcome,
    ResourceKey,
    Seen,
    WaitSpec,
    deletion_verdict,
    evaluate,
    parse_time,
)

# The triggerer routes structlog events (not stdlib logging) into each task's trigger log.
log = structlog.get_logger(logger_name=__name__)


def build_wait_spec(
    requested_at: str | None,
    revision: str | None,
    dry_run: bool,
    resources: Sequence[dict[str, Any]] | None,
    degraded_grace_seconds: float,
) -> WaitSpec:
    """The :class:`WaitSpec` shared by the sensor's poke and the trigger."""
    return WaitSpec(
        requested_at=parse_time(requested_at),
        revision=revision or None,
        dry_run=dry_run,
        resources=tuple(ResourceKey.from_dict(r) for r in resources or ()),
        degraded_grace=timedelta(seconds=degraded_grace_seconds),
    )


def past_deadline(deadline: str | None) -> bool:
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
    """Poll one Application and fire once with ``success``, ``failed`` or ``error``.

    ``failed`` is final (the sync failed, or Argo CD refused the request); ``error`` is an
    infrastructure problem that Airflow's retries may fix.

    :param app_name: the Argo CD Application.
    :param requested_at: ISO time of our sync request; None gates on the current state only.
    :param revision: the revision asked for.
    :param dry_run: the sync was a dry run.
    :param selected_resources: optional selection of resources (``group, kind, namespace, name``).
    :param degraded_grace_seconds: Degraded is tolerated this long when no progress was seen.
    :param deadline: ISO time after which the wait fails with its last reason (restart-safe,
        unlike a relative timeout).
    :param poll_interval: seconds between polls.
    :param argocd_conn_id: Airflow connection to Argo CD.
    """

    def __init__(
        self,
        app_name: str,
        requested_at: str | None = None,
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
        self.requested_at = requested_at
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
        hook = ArgoCDAsyncHook(argocd_conn_id=self.argocd_conn_id)
        spec = build_wait_spec(
            self.requested_at,
            self.revision,
            self.dry_run,
            self.selected_resources,
            self.degraded_grace_seconds,
        )
        seen = Seen()
        await log.ainfo("Watching Argo CD app %s (requested at %s)", self.app_name, self.requested_at)
        while True:
            try:
                app = await hook.get_application(self.app_name)
            except (ArgoCDAPIError, httpx.HTTPError) as exc:
                permanent = isinstance(exc, ArgoCDAPIError) and exc.is_permanent
                yield self._event("failed" if permanent else "error", f"app {self.app_name!r}: {exc}")
                return
            verdict = evaluate(app, spec, seen)
            seen = verdict.seen
            if verdict.outcome is Outcome.DONE:
                yield self._event("success", verdict.reason)
                return
            if verdict.outcome is Outcome.FAILED:
                yield self._event("failed", verdict.reason)
                return
            if past_deadline(self.deadline):
                yield self._event("failed", timeout_message(self.app_name, self.deadline, verdict.reason))
                return
            await log.ainfo("Argo CD app %s: %s", self.app_name, verdict.reason)
            await asyncio.sleep(self.poll_interval)


class ArgoCDApplicationDeletedTrigger(_PlainTrigger):
    """Poll until a deleted Application is gone (``success``) or stuck on finalizers (``failed``).

    The list endpoint answers for a missing app (``get`` would say 403), and the stuck age is
    measured from the server's ``deletionTimestamp``, so a restarted triggerer agrees.
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
        hook = ArgoCDAsyncHook(argocd_conn_id=self.argocd_conn_id)
        stuck_after = timedelta(seconds=self.stuck_after_seconds)
        while True:
            try:
                items = (await hook.list_applications(name=self.app_name)).get("items") or []
            except (ArgoCDAPIError, httpx.HTTPError) as exc:
                yield TriggerEvent({"status": "error", "message": f"app {self.app_name!r}: {exc}"})
                return
            verdict = deletion_verdict(items[0] if items else None, stuck_after)
            if verdict.outcome is not Outcome.WAITING:
                status = "success" if verdict.done else "failed"
                yield TriggerEvent({"status": status, "message": verdict.reason})
                return
            await log.ainfo("Argo CD app %s: %s", self.app_name, verdict.reason)
            await asyncio.sleep(self.poll_interval)

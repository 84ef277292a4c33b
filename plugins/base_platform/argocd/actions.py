"""What the platform DAGs do to Argo CD, as plain functions over a hook: no Airflow task code.

Deploy, rollback, drift healing and teardown share these. They raise :class:`ActionError` for
a refusal that no retry fixes, and let :class:`~base_platform.argocd.hooks.ArgoCDAPIError`
through; :func:`base_platform.argocd.adapter.airflow_errors` turns both into Airflow's
failure or retry.

Starting an operation returns a :class:`Started` whose ``mark`` identifies the operation that
was there before ours, so a wait can recognise ours without comparing clocks. The mark is
read again on every retry of "another operation is already in progress": the mark of an
operation that was still running would let that operation pass for ours.

A sync carries its owner (the Airflow task) and its mark in the operation's ``info``, which
Argo CD keeps with the operation. A retry of that task (its trigger died, say) finds them there
and watches the sync the earlier try started instead of starting a second one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, TypeVar

import structlog
import tenacity

from base_platform.argocd.application import PIN_ANNOTATION, pin_annotation
from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.status import (
    Evaluation,
    OperationMark,
    Outcome,
    WaitSpec,
    evaluate,
    evaluate_deletion,
)
from base_platform.types import JSON

log = structlog.get_logger(logger_name=__name__)
T = TypeVar("T")

IN_PROGRESS_ATTEMPTS = 8
IN_PROGRESS_BACKOFF_SECONDS = 1.0
OWNER_INFO = "airflow.task"
"""Operation info naming who started a sync: ``<dag_id>/<run_id>/<task_id>[/<map_index>]``."""
MARK_INFO = "airflow.mark"
"""Operation info holding the :class:`OperationMark` taken before that sync, as JSON."""


class ActionError(Exception):
    """Argo CD cannot do what was asked, and retrying will not change that."""


class OperationInProgress(Exception):
    """The app still runs an operation that is not ours; a later attempt may find it idle."""


@dataclass(frozen=True)
class Started:
    """An operation we started: what a wait needs to recognise it, and what to roll back to."""

    app_name: str
    mark: OperationMark
    revision: str | None
    dry_run: bool = False
    previous_history_id: int | None = None
    history_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mark": self.mark.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Started:
        return cls(**{**data, "mark": OperationMark.from_dict(data["mark"])})

    def wait_spec(self) -> WaitSpec:
        return WaitSpec(after=self.mark, revision=self.revision, dry_run=self.dry_run)


def _when_idle(
    call: Callable[[], T], attempts: int = IN_PROGRESS_ATTEMPTS, backoff: float = IN_PROGRESS_BACKOFF_SECONDS
) -> T:
    """Run ``call`` again, with backoff, while Argo CD says another operation is in progress."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff, max=30),
        retry=tenacity.retry_if_exception(
            lambda exc: (
                isinstance(exc, OperationInProgress)
                or (isinstance(exc, ArgoCDAPIError) and exc.is_operation_in_progress)
            )
        ),
        reraise=True,
        before_sleep=lambda state: log.warning("Another operation is in progress; trying again"),
    )
    return retrying(call)


def _busy(app: JSON) -> bool:
    phase = ((app.get("status") or {}).get("operationState") or {}).get("phase")
    return bool(app.get("operation")) or phase in {"Running", "Terminating"}


def _mark_when_idle(app: JSON) -> OperationMark:
    if _busy(app):
        name = (app.get("metadata") or {}).get("name")
        raise OperationInProgress(f"app {name!r} is running another operation")
    return OperationMark.of(app)


def history_ids(app: JSON) -> list[int]:
    return sorted(int(h["id"]) for h in (app.get("status") or {}).get("history") or [])


def _target_revision(app: JSON) -> str | None:
    revision = (app.get("spec") or {}).get("source", {}).get("targetRevision")
    return str(revision) if revision else None


def _infos(owner: str, mark: OperationMark) -> list[dict[str, str]]:
    return [{"name": OWNER_INFO, "value": owner}, {"name": MARK_INFO, "value": json.dumps(mark.to_dict())}]


def _earlier_sync(app: JSON, owner: str, dry_run: bool) -> OperationMark | None:
    """The mark that an earlier try of ``owner`` stored on the app's last operation, when that
    sync still stands: running, or succeeded with the app Synced. A failed, terminated or undone
    sync (the app drifted since) is started again."""
    status = app.get("status") or {}
    state = status.get("operationState") or {}
    operation = app.get("operation") or state.get("operation") or {}
    info = {str(i.get("name")): str(i.get("value")) for i in operation.get("info") or []}
    sync = operation.get("sync") or {}
    if info.get(OWNER_INFO) != owner or MARK_INFO not in info or bool(sync.get("dryRun")) != dry_run:
        return None
    running = bool(app.get("operation")) or state.get("phase") == "Running"
    synced = (status.get("sync") or {}).get("status") == "Synced"
    stands = state.get("phase") == "Succeeded" and (dry_run or synced)
    return OperationMark.from_dict(json.loads(info[MARK_INFO])) if running or stands else None


def start_sync(
    hook: ArgoCDHook,
    name: str,
    revision: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    resources: list[JSON] | None = None,
    sync_options: list[str] | None = None,
    attempts: int = IN_PROGRESS_ATTEMPTS,
    owner: str | None = None,
) -> Started:
    """Mark the app's last operation, then request a sync; both again while another runs.

    With ``owner``, a sync that an earlier try of the same owner started, and that still
    stands, is returned as started instead of being requested again.
    """

    def attempt() -> Started:
        app = hook.get_application(name)
        mark = _earlier_sync(app, owner, dry_run) if owner else None
        if mark is not None:
            log.warning("An earlier try of %s already started this sync of %s; watching it", owner, name)
        else:
            mark = _mark_when_idle(app)
            hook.sync_application(
                name,
                revision=revision or None,
                prune=prune,
                dry_run=dry_run,
                resources=resources,
                sync_options=sync_options,
                retry_in_progress=False,
                infos=_infos(owner, mark) if owner else None,
            )
        return Started(
            app_name=name,
            mark=mark,
            revision=revision or _target_revision(app),
            dry_run=dry_run,
            previous_history_id=mark.history_id if mark.history_id >= 0 else None,
        )

    started = _when_idle(attempt, attempts)
    log.info("Sync of %s to %s requested (dry run: %s)", name, started.revision, dry_run)
    return started


def pick_history_entry(app: JSON, to: int | str) -> JSON:
    """The history entry to roll back to: an id, or ``previous`` (the one before the current)."""
    history: list[JSON] = sorted((app.get("status") or {}).get("history") or [], key=lambda h: int(h["id"]))
    name = (app.get("metadata") or {}).get("name")
    if to == "previous":
        if len(history) < 2:
            raise ActionError(f"app {name!r} has no previous history entry to roll back to")
        return history[-2]
    for entry in history:
        if int(entry["id"]) == int(to):
            return entry
    raise ActionError(f"app {name!r} has no history entry {to}; known ids: {history_ids(app)}")


def _pin(hook: ArgoCDHook, app: JSON, entry: JSON, disable_auto_sync: bool) -> bool:
    """Turn automated sync off (Argo CD refuses a rollback otherwise) and record the pin."""
    name = app["metadata"]["name"]
    spec = dict(app.get("spec") or {})
    policy = dict(spec.get("syncPolicy") or {})
    auto_sync = bool(policy.get("automated"))
    if auto_sync and not disable_auto_sync:
        raise ActionError(
            f"app {name!r} has automated sync on; Argo CD refuses a rollback. "
            "Set disable_auto_sync to turn it off first."
        )
    if auto_sync:
        log.warning("Turning automated sync off for %s before the rollback", name)
        policy.pop("automated")
        spec["syncPolicy"] = policy
    metadata = app.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    annotations[PIN_ANNOTATION] = pin_annotation(int(entry["id"]), str(entry.get("revision")))
    # An upsert replaces the metadata it is given: keep the finalizers (cascade delete) and labels.
    kept = {key: metadata[key] for key in ("namespace", "labels", "finalizers") if metadata.get(key)}
    body = {"metadata": {"name": name, **kept, "annotations": annotations}, "spec": spec}
    hook.upsert_application(body, validate=False)
    return auto_sync


def start_rollback(
    hook: ArgoCDHook,
    name: str,
    to: int | str,
    disable_auto_sync: bool = False,
    prune: bool = False,
    dry_run: bool = False,
    attempts: int = IN_PROGRESS_ATTEMPTS,
) -> tuple[Started, bool]:
    """Pin the app, then roll it back to a history entry; again while another operation runs.

    Returns what the wait needs, and whether automated sync had to be turned off.
    """
    auto_sync_disabled = False

    def attempt() -> Started:
        nonlocal auto_sync_disabled
        app = hook.get_application(name)
        mark = _mark_when_idle(app)
        entry = pick_history_entry(app, to)
        if not dry_run:
            auto_sync_disabled = _pin(hook, app, entry, disable_auto_sync) or auto_sync_disabled
        hook.rollback_application(name, int(entry["id"]), prune=prune, dry_run=dry_run)
        return Started(
            app_name=name,
            mark=mark,
            revision=str(entry.get("revision")),
            dry_run=dry_run,
            history_id=int(entry["id"]),
        )

    started = _when_idle(attempt, attempts)
    log.info("Rollback of %s to history %s (%s) requested", name, started.history_id, started.revision)
    return started, auto_sync_disabled


def terminate(hook: ArgoCDHook, name: str) -> bool:
    """Stop the app's running operation, as ``argocd app terminate-op``; False when none runs."""
    try:
        hook.terminate_operation(name)
    except ArgoCDAPIError as exc:
        if exc.status_code == 400 and "no operation is in progress" in exc.message.lower():
            return False
        raise
    log.warning("Terminated the running operation of %s", name)
    return True


def wait_until_done(hook: ArgoCDHook, name: str, spec: WaitSpec, timeout: float, poll: float) -> Evaluation:
    """Poll in-process until the app is done, failed, or ``timeout`` seconds pass.

    For short waits inside a task and for ``deferrable=False``; long waits belong in the trigger.
    """
    deadline = time.monotonic() + timeout
    verdict = evaluate(hook.get_application(name), spec)
    while verdict.outcome is Outcome.WAITING and time.monotonic() < deadline:
        time.sleep(poll)
        verdict = evaluate(hook.get_application(name), spec, verdict.seen)
    return verdict


def wait_until_gone(hook: ArgoCDHook, name: str, stuck_after: float, poll: float) -> Evaluation:
    """Poll in-process until a deleted app is gone, or stuck for ``stuck_after`` seconds."""
    first = time.monotonic()
    while True:
        items = hook.list_applications(name=name).get("items") or []
        verdict = evaluate_deletion(
            items[0] if items else None, timedelta(seconds=stuck_after), time.monotonic() - first
        )
        if verdict.outcome is not Outcome.WAITING:
            return verdict
        time.sleep(poll)


def request_deletion(
    hook: ArgoCDHook, name: str, cascade: bool = True, propagation_policy: str = "foreground"
) -> bool:
    """Ask Argo CD to delete an app; False when it was already gone (idempotent)."""
    try:
        hook.delete_application(name, cascade=cascade, propagation_policy=propagation_policy)
    except ArgoCDAPIError as exc:
        if hook.is_missing(exc, name):
            log.info("Argo CD app %s is already gone", name)
            return False
        raise
    log.info("Deletion of %s requested (cascade=%s)", name, cascade)
    return True


def health_problem(hook: ArgoCDHook, name: str) -> str | None:
    """Why an app deployed earlier is not Synced and Healthy now, or None when it is."""
    app = hook.find_application(name)
    if app is None:
        return f"{name} (not found)"
    verdict = evaluate(app, WaitSpec())
    return None if verdict.done else f"{name} ({verdict.reason})"

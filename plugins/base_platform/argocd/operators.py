"""Operators that change Argo CD: upsert, sync, rollback, delete, and AppProject upsert.

Sync and rollback return ``{"app_name", "requested_at", "revision", "dry_run"}`` as separate
XComs (``multiple_outputs``), so that :class:`~base_platform.argocd.sensors.ArgoCDApplicationSensor`
can wait for exactly the operation they started: pass ``operator.output["requested_at"]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import JSON, ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.status import Outcome, Verdict, WaitSpec, evaluate
from base_platform.templating import as_bool

log = logging.getLogger(__name__)


def request_time() -> str:
    """Now, floored to the second: Argo CD's timestamps have second resolution."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class _ArgoCDOperator(BaseOperator):
    """Runs ``call`` with a hook. A permanent client error fails without Airflow retries:
    the hook already retried what a retry can fix."""

    ui_color = "#ef7b4d"

    def __init__(self, *, argocd_conn_id: str = ArgoCDHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.argocd_conn_id = argocd_conn_id

    def hook(self) -> ArgoCDHook:
        return ArgoCDHook(argocd_conn_id=self.argocd_conn_id)

    def execute(self, context: Context) -> Any:
        try:
            return self.call(self.hook(), context)
        except ArgoCDAPIError as exc:
            if exc.is_permanent:
                raise AirflowFailException(str(exc)) from exc
            raise

    def call(self, hook: ArgoCDHook, context: Context) -> Any:
        raise NotImplementedError


class _HandsOffToSensor(_ArgoCDOperator):
    """Pushes each key of its result as its own XCom, for the sensor's templated fields."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)


def spec_changes(live: Any, desired: Any, prefix: str = "spec") -> list[str]:
    """Dotted paths where ``desired`` differs from ``live`` (keys only in live are ignored)."""
    if isinstance(live, dict) and isinstance(desired, dict):
        return [
            c for key in sorted(desired) for c in spec_changes(live.get(key), desired[key], f"{prefix}.{key}")
        ]
    return [] if live == desired else [prefix]


class ArgoCDUpsertApplicationOperator(_ArgoCDOperator):
    """Create or update an Application (``POST /applications?upsert=true&validate=true``).

    In a dry run it writes nothing and reports whether the app would be created or updated,
    and which spec fields would change.

    :param application: the Application body (``metadata``, ``spec``).
    :param validate: let Argo CD validate the spec (repository, destination) on write.
    :param is_dry_run: only report.
    """

    template_fields: Sequence[str] = ("application", "is_dry_run")

    def __init__(
        self, *, application: JSON, validate: bool = True, is_dry_run: bool | str = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.validate = validate
        self.is_dry_run = is_dry_run

    def _dry_run(self, hook: ArgoCDHook) -> JSON:
        name = self.application["metadata"]["name"]
        if not hook.application_exists(name):
            self.log.info("Dry run: Argo CD app %s would be created", name)
            return {"app_name": name, "dry_run": True, "would": "create", "changes": ["spec"]}
        changes = spec_changes(hook.get_application(name).get("spec", {}), self.application.get("spec", {}))
        self.log.info("Dry run: Argo CD app %s would %s %s", name, "update" if changes else "keep", changes)
        return {
            "app_name": name,
            "dry_run": True,
            "would": "update" if changes else "keep",
            "changes": changes,
        }

    def call(self, hook: ArgoCDHook, context: Context) -> JSON:
        if as_bool(self.is_dry_run):
            return self._dry_run(hook)
        app = hook.upsert_application(self.application, validate=self.validate)
        meta = app.get("metadata", {})
        self.log.info(
            "Upserted Argo CD app %s (resourceVersion %s)", meta.get("name"), meta.get("resourceVersion")
        )
        return {"app_name": meta.get("name"), "resource_version": meta.get("resourceVersion")}


class ArgoCDUpsertProjectOperator(_ArgoCDOperator):
    """Create or update an AppProject.

    :param project: the AppProject body.
    """

    template_fields: Sequence[str] = ("project",)

    def __init__(self, *, project: JSON, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project

    def call(self, hook: ArgoCDHook, context: Context) -> str:
        name = str(hook.upsert_project(self.project).get("metadata", {}).get("name"))
        self.log.info("Upserted Argo CD project %s", name)
        return name


class ArgoCDSyncApplicationOperator(_HandsOffToSensor):
    """Request a sync and hand its request time and revision to the sensor.

    Retries "another operation is already in progress" with backoff (in the hook). Its result
    also names ``previous_history_id``, the history entry deployed before this sync. A dry run
    of an app that does not exist yet is skipped: there is nothing to compare.

    :param app_name: the Application to sync.
    :param revision: the revision to sync to; defaults to the app's ``targetRevision``.
    :param prune: delete resources that are no longer in Git.
    :param is_dry_run: ask Argo CD what would change, without changing anything.
    :param selected_resources: optional selection of resources to sync.
    :param sync_options: e.g. ``["CreateNamespace=true", "ServerSideApply=true"]``.
    """

    template_fields: Sequence[str] = ("app_name", "revision", "prune", "is_dry_run", "selected_resources")

    def __init__(
        self,
        *,
        app_name: str,
        revision: str | None = None,
        prune: bool | str = False,
        is_dry_run: bool | str = False,
        selected_resources: list[JSON] | None = None,
        sync_options: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.revision = revision
        self.prune = prune
        self.is_dry_run = is_dry_run
        self.selected_resources = selected_resources
        self.sync_options = sync_options

    def call(self, hook: ArgoCDHook, context: Context) -> JSON:
        dry_run = as_bool(self.is_dry_run)
        if dry_run and not hook.application_exists(self.app_name):
            raise AirflowSkipException(f"dry run: {self.app_name} does not exist yet, so it would be created")
        requested_at = request_time()
        app = hook.sync_application(
            self.app_name,
            revision=self.revision or None,
            prune=as_bool(self.prune),
            dry_run=dry_run,
            resources=self.selected_resources,
            sync_options=self.sync_options,
        )
        revision = self.revision or app.get("spec", {}).get("source", {}).get("targetRevision")
        self.log.info(
            "Sync of %s to %s requested at %s (dry run: %s)",
            self.app_name,
            revision,
            requested_at,
            dry_run,
        )
        history = app.get("status", {}).get("history") or []
        return {
            "app_name": self.app_name,
            "requested_at": requested_at,
            "revision": revision,
            "dry_run": dry_run,
            # What was deployed before this sync: the rollback target if the sync goes bad.
            "previous_history_id": max((int(h["id"]) for h in history), default=None),
        }


def pick_history_entry(app: JSON, to: int | str) -> JSON:
    """The history entry to roll back to: an id, or ``previous`` (the one before the current)."""
    history: list[JSON] = sorted(app.get("status", {}).get("history") or [], key=lambda h: int(h["id"]))
    name = app.get("metadata", {}).get("name")
    if to == "previous":
        if len(history) < 2:
            raise AirflowFailException(f"app {name!r} has no previous history entry to roll back to")
        return history[-2]
    for entry in history:
        if int(entry["id"]) == int(to):
            return entry
    ids = [int(h["id"]) for h in history]
    raise AirflowFailException(f"app {name!r} has no history entry {to}; known ids: {ids}")


def start_rollback(
    hook: ArgoCDHook,
    name: str,
    to: int | str,
    disable_auto_sync: bool = False,
    prune: bool = False,
    dry_run: bool = False,
) -> JSON:
    """Request a rollback to a history entry; the hand-off dict for the sensor.

    Argo CD refuses a rollback while automated sync is on: with ``disable_auto_sync`` it is
    turned off first, and the log says so.
    """
    app = hook.get_application(name)
    entry = pick_history_entry(app, to)
    auto_sync = bool((app.get("spec", {}).get("syncPolicy") or {}).get("automated"))
    if auto_sync:
        if not disable_auto_sync:
            raise AirflowFailException(
                f"app {name!r} has automated sync on; Argo CD refuses a rollback. "
                "Set disable_auto_sync to turn it off first."
            )
        log.warning("Turning automated sync off for %s before the rollback", name)
        app["spec"]["syncPolicy"].pop("automated")
        hook.upsert_application({"metadata": {"name": name}, "spec": app["spec"]})
    requested_at = request_time()
    hook.rollback_application(name, int(entry["id"]), prune=prune, dry_run=dry_run)
    log.info("Rollback of %s to history %s (%s) requested", name, entry["id"], entry.get("revision"))
    return {
        "app_name": name,
        "requested_at": requested_at,
        "revision": entry.get("revision"),
        "dry_run": dry_run,
        "history_id": int(entry["id"]),
        "auto_sync_disabled": auto_sync,
    }


def wait_until_done(hook: ArgoCDHook, name: str, spec: WaitSpec, timeout: float, poll: float) -> Verdict:
    """Poll in-process until the app is done, failed, or ``timeout`` seconds pass.

    For short waits inside a task (rollback after a failure, healing); long waits belong to
    the deferrable sensor.
    """
    deadline = time.monotonic() + timeout
    verdict = evaluate(hook.get_application(name), spec)
    while verdict.outcome is Outcome.WAITING and time.monotonic() < deadline:
        time.sleep(poll)
        verdict = evaluate(hook.get_application(name), spec, verdict.seen)
    return verdict


class ArgoCDRollbackApplicationOperator(_HandsOffToSensor):
    """Roll an Application back to a history entry.

    Argo CD refuses a rollback while automated sync is on. With ``disable_auto_sync`` the
    operator turns it off first and says so in the log; otherwise it fails with that reason.

    :param app_name: the Application.
    :param to: a history id, or ``previous``.
    :param prune: delete resources not in the target revision.
    :param is_dry_run: only report.
    :param disable_auto_sync: turn automated sync off before rolling back.
    """

    template_fields: Sequence[str] = ("app_name", "to")

    def __init__(
        self,
        *,
        app_name: str,
        to: int | str = "previous",
        prune: bool = False,
        is_dry_run: bool = False,
        disable_auto_sync: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.to = to
        self.prune = prune
        self.is_dry_run = is_dry_run
        self.disable_auto_sync = disable_auto_sync

    def call(self, hook: ArgoCDHook, context: Context) -> JSON:
        return start_rollback(
            hook,
            self.app_name,
            self.to,
            disable_auto_sync=self.disable_auto_sync,
            prune=self.prune,
            dry_run=self.is_dry_run,
        )


class ArgoCDDeleteApplicationOperator(_ArgoCDOperator):
    """Delete an Application; deleting one that is already gone succeeds.

    Argo CD answers 403 rather than 404 for a missing app, so a 403 is confirmed against the
    list endpoint before it is treated as "already gone".

    :param app_name: the Application.
    :param cascade: delete its resources too.
    :param propagation_policy: ``foreground`` or ``background``.
    """

    template_fields: Sequence[str] = ("app_name",)

    def __init__(
        self, *, app_name: str, cascade: bool = True, propagation_policy: str = "foreground", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.cascade = cascade
        self.propagation_policy = propagation_policy

    def call(self, hook: ArgoCDHook, context: Context) -> bool:
        return request_deletion(hook, self.app_name, self.cascade, self.propagation_policy)


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

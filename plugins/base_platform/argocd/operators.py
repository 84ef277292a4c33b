"""Operators that change Argo CD: sync (with its upsert), rollback and delete.

Sync and rollback follow the provider packages' ``wait_for_completion=True, deferrable=True``
pattern: ``execute`` starts the operation and defers to
:class:`~base_platform.argocd.triggers.ArgoCDApplicationTrigger`, which recognises exactly that
operation by the mark taken before it started; ``execute_complete`` judges the event. A wait
that reaches its deadline terminates the operation, as ``argocd app terminate-op`` does, then
fails with the reason. With ``deferrable=False`` the same wait polls inside the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from base_platform.argocd import actions
from base_platform.argocd.adapter import airflow_errors
from base_platform.argocd.application import spec_changes
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.status import Outcome, WaitSpec
from base_platform.argocd.triggers import (
    ArgoCDApplicationDeletedTrigger,
    ArgoCDApplicationTrigger,
    timeout_message,
)
from base_platform.templating import as_bool
from base_platform.types import JSON

DEFAULT_WAIT_TIMEOUT_SECONDS = 900.0


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, as the provider packages' operators read it."""
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def task_owner(context: Context) -> str | None:
    """Names this task in this run, whichever try it is: what a sync records as its owner, so
    that a retry watches the sync an earlier try started instead of starting another. None
    outside a task run (``execute`` called directly)."""
    ti = context.get("ti")
    if ti is None:
        return None
    map_index = getattr(ti, "map_index", -1)
    owner = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"
    return owner if map_index is None or map_index < 0 else f"{owner}/{map_index}"


class ArgoCDOperationOperator(BaseOperator):
    """Start an Argo CD operation, then wait for exactly that operation (the shared half of
    sync and rollback). Subclasses implement :meth:`start`.

    :param wait_for_completion: wait until the operation is done, Synced and Healthy.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param wait_timeout: seconds the wait may take before the operation is terminated.
    :param poll_interval: seconds between two reads of the Application.
    :param degraded_grace_seconds: Degraded is tolerated this long when no progress was seen.
    :param argocd_conn_id: Airflow connection to Argo CD.
    """

    ui_color = "#ef7b4d"

    def __init__(
        self,
        *,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT_SECONDS,
        poll_interval: float = 10.0,
        degraded_grace_seconds: float = 60.0,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.degraded_grace_seconds = degraded_grace_seconds
        self.argocd_conn_id = argocd_conn_id

    def hook(self) -> ArgoCDHook:
        return ArgoCDHook(argocd_conn_id=self.argocd_conn_id)

    def start(self, hook: ArgoCDHook, context: Context) -> actions.Started:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        with self.hook() as hook, airflow_errors(self.task_id):
            started = self.start(hook, context)
        return self.wait_for(started, context, "execute_complete")

    def wait_for(self, started: actions.Started, context: Context, method_name: str, **extra: Any) -> Any:
        """Defer to the trigger, or poll here; either way ``method_name`` judges the outcome, with
        ``started`` and ``extra`` as keyword arguments."""
        if not self.wait_for_completion:
            return started.to_dict()
        deadline = (datetime.now(UTC) + timedelta(seconds=self.wait_timeout)).isoformat()
        if not self.deferrable:
            with self.hook() as hook, airflow_errors(self.task_id):
                verdict = actions.wait_until_done(
                    hook, started.app_name, self._spec(started), self.wait_timeout, self.poll_interval
                )
            status = {Outcome.DONE: "success", Outcome.FAILED: "failed"}.get(verdict.outcome, "timeout")
            message = verdict.reason
            if status == "timeout":
                message = timeout_message(started.app_name, deadline, verdict.reason)
            event = {"status": status, "message": message}
            return getattr(self, method_name)(context, event, started=started.to_dict(), **extra)
        self.defer(
            trigger=ArgoCDApplicationTrigger(
                app_name=started.app_name,
                after=started.mark.to_dict(),
                revision=started.revision,
                dry_run=started.dry_run,
                degraded_grace_seconds=self.degraded_grace_seconds,
                deadline=deadline,
                poll_interval=self.poll_interval,
                argocd_conn_id=self.argocd_conn_id,
            ),
            method_name=method_name,
            kwargs={"started": started.to_dict(), **extra},
            # The trigger fires "timeout" at the deadline; this only backs it up.
            timeout=timedelta(seconds=self.wait_timeout + 120),
        )

    def _spec(self, started: actions.Started) -> WaitSpec:
        return replace(started.wait_spec(), degraded_grace=timedelta(seconds=self.degraded_grace_seconds))

    def judge(self, event: dict[str, Any], started: actions.Started) -> str:
        """The success message; a failure raises (``timeout`` after terminating the operation)."""
        status, message = event.get("status"), str(event.get("message", ""))
        if status == "success":
            self.log.info("%s", message)
            return message
        if status == "timeout":
            with self.hook() as hook, airflow_errors(self.task_id):
                if actions.terminate(hook, started.app_name):
                    message += "; terminated the running operation"
            raise AirflowFailException(message)
        if status == "failed":
            raise AirflowFailException(message)
        raise AirflowException(message)  # an infrastructure error: Airflow's retries apply

    def execute_complete(self, context: Context, event: dict[str, Any], started: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the operation's result, or a failure that says why."""
        handoff = actions.Started.from_dict(started)
        return handoff.to_dict() | {"verdict": self.judge(event, handoff)}


class ArgoCDSyncApplicationOperator(ArgoCDOperationOperator):
    """Create or update an Application (when given), sync it, and wait until that sync is done.

    A dry run writes nothing: it reports what the upsert would change and, for an app that
    exists, what Argo CD's dry-run sync would apply.

    :param app_name: the Application to sync.
    :param application: the Application body to upsert first (``metadata``, ``spec``), if any.
    :param revision: the revision to sync to; defaults to the app's ``targetRevision``.
    :param prune: delete resources that are no longer in Git.
    :param is_dry_run: ask Argo CD what would change, without changing anything.
    :param selected_resources: optional selection of resources to sync.
    :param sync_options: e.g. ``["CreateNamespace=true", "ServerSideApply=true"]``.
    """

    template_fields: Sequence[str] = (
        "app_name",
        "application",
        "revision",
        "prune",
        "is_dry_run",
        "selected_resources",
    )

    def __init__(
        self,
        *,
        app_name: str,
        application: JSON | None = None,
        revision: str | None = None,
        prune: bool | str = False,
        is_dry_run: bool | str = False,
        selected_resources: list[JSON] | None = None,
        sync_options: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.application = application
        self.revision = revision
        self.prune = prune
        self.is_dry_run = is_dry_run
        self.selected_resources = selected_resources
        self.sync_options = sync_options

    def upsert(self, hook: ArgoCDHook) -> JSON:
        """Write the Application, or in a dry run say what writing it would change."""
        assert self.application is not None
        if not as_bool(self.is_dry_run):
            app = hook.upsert_application(self.application)
            self.log.info(
                "Upserted %s (resourceVersion %s)", self.app_name, app["metadata"].get("resourceVersion")
            )
            return {"would": "upsert"}
        if not hook.application_exists(self.app_name):
            return {"would": "create", "changes": ["spec"]}
        live = hook.get_application(self.app_name).get("spec", {})
        changes = spec_changes(live, self.application.get("spec", {}))
        return {"would": "update" if changes else "keep", "changes": changes}

    def start(self, hook: ArgoCDHook, context: Context) -> actions.Started:
        if self.application is not None:
            planned = self.upsert(hook)
            self.log.info("Upsert of %s: %s", self.app_name, planned)
            if planned["would"] == "create":
                raise _NothingToSync(f"dry run: {self.app_name} does not exist yet, so it would be created")
        return actions.start_sync(
            hook,
            self.app_name,
            revision=self.revision or None,
            prune=as_bool(self.prune),
            dry_run=as_bool(self.is_dry_run),
            resources=self.selected_resources,
            sync_options=self.sync_options,
            owner=task_owner(context),
        )

    def execute(self, context: Context) -> Any:
        try:
            return super().execute(context)
        except _NothingToSync as done:
            self.log.info("%s", done)
            return {"app_name": self.app_name, "dry_run": True, "verdict": str(done)}


class _NothingToSync(Exception):
    """A dry run of an app that does not exist: there is nothing to ask Argo CD."""


class ArgoCDRollbackApplicationOperator(ArgoCDOperationOperator):
    """Roll an Application back to a history entry and wait until that rollback is done.

    The rollback pins the app (an annotation, and automated sync off) so the nightly drift
    heal does not undo it; the next deploy of the app clears the pin. Argo CD refuses a
    rollback while automated sync is on: with ``disable_auto_sync`` it is turned off first.

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

    def execute(self, context: Context) -> Any:
        with self.hook() as hook, airflow_errors(self.task_id):
            started, auto_sync_off = actions.start_rollback(
                hook,
                self.app_name,
                self.to,
                disable_auto_sync=self.disable_auto_sync,
                prune=self.prune,
                dry_run=self.is_dry_run,
            )
        if auto_sync_off:
            self.log.warning("%s had automated sync on: turned it off so Argo CD accepts it", self.app_name)
        return self.wait_for(started, context, "execute_complete", auto_sync_disabled=auto_sync_off)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        started: dict[str, Any],
        auto_sync_disabled: bool = False,
    ) -> Any:
        return super().execute_complete(context, event, started) | {"auto_sync_disabled": auto_sync_disabled}


class ArgoCDDeleteApplicationOperator(BaseOperator):
    """Delete an Application and, with ``wait_for_completion``, wait until it is gone.

    Deleting an app that is already gone succeeds. Argo CD deletes asynchronously (finalizers
    remove the resources first); an app still deleting after ``stuck_after_seconds`` fails the
    task, naming its finalizers and the resources left.

    :param app_name: the Application.
    :param cascade: delete its resources too.
    :param propagation_policy: ``foreground`` or ``background``.
    :param wait_for_completion: wait until the app is gone.
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param stuck_after_seconds: how long a deletion may take before it counts as stuck.
    :param poll_interval: seconds between two reads.
    :param argocd_conn_id: Airflow connection to Argo CD.
    """

    template_fields: Sequence[str] = ("app_name", "stuck_after_seconds")
    ui_color = "#ef7b4d"

    def __init__(
        self,
        *,
        app_name: str,
        cascade: bool = True,
        propagation_policy: str = "foreground",
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        stuck_after_seconds: float | str = 600.0,
        poll_interval: float = 10.0,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_name = app_name
        self.cascade = cascade
        self.propagation_policy = propagation_policy
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.stuck_after_seconds = stuck_after_seconds
        self.poll_interval = poll_interval
        self.argocd_conn_id = argocd_conn_id

    def execute(self, context: Context) -> Any:
        with ArgoCDHook(argocd_conn_id=self.argocd_conn_id) as hook, airflow_errors(self.task_id):
            requested = actions.request_deletion(hook, self.app_name, self.cascade, self.propagation_policy)
            if not self.wait_for_completion or not requested:
                return requested
            if not self.deferrable:
                verdict = actions.wait_until_gone(
                    hook, self.app_name, float(self.stuck_after_seconds), self.poll_interval
                )
                return self.execute_complete(
                    context, {"status": "success" if verdict.done else "failed", "message": verdict.reason}
                )
        self.defer(
            trigger=ArgoCDApplicationDeletedTrigger(
                app_name=self.app_name,
                stuck_after_seconds=float(self.stuck_after_seconds),
                poll_interval=self.poll_interval,
                argocd_conn_id=self.argocd_conn_id,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.stuck_after_seconds) + 120),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> bool:
        """``success``: gone; ``failed``: stuck on finalizers; anything else is retried."""
        status, message = event.get("status"), str(event.get("message", ""))
        if status == "failed":
            raise AirflowFailException(message)
        if status != "success":
            raise AirflowException(message)
        self.log.info("Argo CD app %s: %s", self.app_name, message)
        return True

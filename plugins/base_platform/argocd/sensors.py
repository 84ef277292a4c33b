"""Deferrable sensors: an Argo CD Application really synced and healthy, or really gone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.status import Seen, deletion_verdict, evaluate
from base_platform.argocd.triggers import (
    ArgoCDApplicationDeletedTrigger,
    ArgoCDApplicationTrigger,
    build_wait_spec,
    past_deadline,
    timeout_message,
)
from base_platform.templating import as_bool


class _DeferringSensor(BaseSensorOperator):
    """Poke once; if not done, defer to the trigger that ``trigger()`` builds (or keep poking
    when ``deferrable=False``). The trigger's ``failed`` is final, ``error`` keeps retries."""

    ui_color = "#ef7b4d"

    def __init__(self, *, argocd_conn_id: str, deferrable: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.argocd_conn_id = argocd_conn_id
        self.deferrable = deferrable

    def trigger(self) -> BaseTrigger:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            trigger=self.trigger(), method_name="execute_complete", timeout=timedelta(seconds=self.timeout)
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        """Resume after the trigger fired; anything but success fails the task."""
        status, message = event.get("status"), event.get("message", "")
        if status == "failed":
            raise AirflowFailException(message)
        if status != "success":
            raise AirflowException(message)
        self.log.info("%s", message)


class ArgoCDApplicationSensor(_DeferringSensor):
    """Wait until the sync requested at ``requested_at`` is finished, reconciled, Synced and Healthy.

    Defers by default; ``deferrable=False`` pokes instead. A failed sync, or Degraded after
    progress, fails the task at once without retries (the app's state, not the infrastructure,
    failed); API errors fail it normally so Airflow's retries apply.

    :param app_name: the Argo CD Application.
    :param requested_at: ISO time of the sync request (the sync operator's XCom ``requested_at``).
    :param revision: the revision asked for (the sync operator's XCom ``revision``).
    :param is_dry_run: the sync was a dry run.
    :param selected_resources: optional selection of resources to judge instead of the whole app.
    :param degraded_grace_seconds: Degraded is tolerated this long when no progress was seen.
    :param deadline: ISO time after which the wait fails, naming what it was still waiting for.
    :param argocd_conn_id: Airflow connection to Argo CD.
    :param deferrable: defer to the triggerer (default) instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = (
        "app_name",
        "requested_at",
        "revision",
        "is_dry_run",
        "selected_resources",
        "deadline",
    )

    def __init__(
        self,
        *,
        app_name: str,
        requested_at: str | None = None,
        revision: str | None = None,
        is_dry_run: bool | str = False,
        selected_resources: list[dict[str, Any]] | None = None,
        degraded_grace_seconds: float = 60.0,
        deadline: str | None = None,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(argocd_conn_id=argocd_conn_id, deferrable=deferrable, **kwargs)
        self.app_name = app_name
        self.requested_at = requested_at
        self.revision = revision
        self.is_dry_run = is_dry_run
        self.selected_resources = selected_resources
        self.degraded_grace_seconds = degraded_grace_seconds
        self.deadline = deadline
        self._seen = Seen()

    @classmethod
    def after(cls, operation: BaseOperator, **kwargs: Any) -> ArgoCDApplicationSensor:
        """A sensor that waits for exactly the operation a sync or rollback operator started.

        :param operation: an ``ArgoCDSyncApplicationOperator`` or ``ArgoCDRollbackApplicationOperator``.
        :param kwargs: further sensor arguments (``task_id``, ``timeout``, ...).
        """
        handoff: Any = operation.output  # one XCom per key: the operators push multiple_outputs
        return cls(
            app_name=handoff["app_name"],
            requested_at=handoff["requested_at"],
            revision=handoff["revision"],
            is_dry_run=handoff["dry_run"],
            **kwargs,
        )

    def poke(self, context: Context) -> bool:
        spec = build_wait_spec(
            self.requested_at,
            self.revision,
            as_bool(self.is_dry_run),
            self.selected_resources,
            self.degraded_grace_seconds,
        )
        hook = ArgoCDHook(argocd_conn_id=self.argocd_conn_id)
        try:
            verdict = evaluate(hook.get_application(self.app_name), spec, self._seen)
        except ArgoCDAPIError as exc:
            if exc.is_permanent:
                raise AirflowFailException(f"app {self.app_name!r}: {exc}") from exc
            raise
        finally:
            hook.close()
        self._seen = verdict.seen
        if verdict.failed:
            raise AirflowFailException(verdict.reason)
        if not verdict.done and past_deadline(self.deadline):
            raise AirflowFailException(timeout_message(self.app_name, self.deadline, verdict.reason))
        self.log.info("Argo CD app %s: %s", self.app_name, verdict.reason)
        return verdict.done

    def trigger(self) -> BaseTrigger:
        return ArgoCDApplicationTrigger(
            app_name=self.app_name,
            requested_at=self.requested_at,
            revision=self.revision,
            dry_run=as_bool(self.is_dry_run),
            selected_resources=self.selected_resources,
            degraded_grace_seconds=self.degraded_grace_seconds,
            deadline=self.deadline,
            poll_interval=self.poke_interval,
            argocd_conn_id=self.argocd_conn_id,
        )


class ArgoCDApplicationDeletedSensor(_DeferringSensor):
    """Wait until a deleted Application is gone; fail, naming what is left, once it is stuck.

    :param app_name: the Argo CD Application.
    :param stuck_after_seconds: a ``deletionTimestamp`` older than this means stuck on finalizers.
    :param argocd_conn_id: Airflow connection to Argo CD.
    :param deferrable: defer to the triggerer (default) instead of occupying a worker slot.
    """

    template_fields: Sequence[str] = ("app_name", "stuck_after_seconds")

    def __init__(
        self,
        *,
        app_name: str,
        stuck_after_seconds: float | str = 300.0,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(argocd_conn_id=argocd_conn_id, deferrable=deferrable, **kwargs)
        self.app_name = app_name
        self.stuck_after_seconds = stuck_after_seconds

    def poke(self, context: Context) -> bool:
        hook = ArgoCDHook(argocd_conn_id=self.argocd_conn_id)
        try:
            items = hook.list_applications(name=self.app_name).get("items") or []
        finally:
            hook.close()
        stuck_after = timedelta(seconds=float(self.stuck_after_seconds))
        verdict = deletion_verdict(items[0] if items else None, stuck_after)
        if verdict.failed:
            raise AirflowFailException(verdict.reason)
        self.log.info("%s", verdict.reason)
        return verdict.done

    def trigger(self) -> BaseTrigger:
        return ArgoCDApplicationDeletedTrigger(
            app_name=self.app_name,
            stuck_after_seconds=float(self.stuck_after_seconds),
            poll_interval=self.poke_interval,
            argocd_conn_id=self.argocd_conn_id,
        )

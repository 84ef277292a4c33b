"""Deferrable sensors: an Argo CD Application really synced and healthy, or really gone."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.triggers.base import BaseTrigger

from base_platform.argocd.adapter import airflow_errors
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import default_deferrable
from base_platform.argocd.status import Seen, evaluate, evaluate_deletion
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

    def __init__(self, *, argocd_conn_id: str, deferrable: bool | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.argocd_conn_id = argocd_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable

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
        if status in {"failed", "timeout"}:
            raise AirflowFailException(message)
        if status != "success":
            raise AirflowException(message)
        self.log.info("%s", message)


class ArgoCDApplicationSensor(_DeferringSensor):
    """Wait until an Application is Synced and Healthy; with ``after``, until the operation that
    followed that mark is finished and reconciled too.

    For an operation this project starts, use the sync or rollback operator, which waits for
    its own operation. Deferrable by ``[operators] default_deferrable``. A failed operation, or
    Degraded after progress, fails the task at once without retries (the app's state, not the
    infrastructure, failed); API errors fail it normally so Airflow's retries apply.

    :param app_name: the Argo CD Application.
    :param after: an :class:`~base_platform.argocd.status.OperationMark` as a dict (the sync
        operator's ``mark`` when ``wait_for_completion=False``); None judges the current state.
    :param revision: the revision asked for.
    :param is_dry_run: the sync was a dry run.
    :param selected_resources: optional selection of resources to judge instead of the whole app.
    :param degraded_grace_seconds: Degraded is tolerated this long when no progress was seen.
    :param deadline: ISO time after which the wait fails, naming what it was still waiting for.
    :param argocd_conn_id: Airflow connection to Argo CD.
    :param deferrable: defer to the triggerer instead of occupying a worker slot (default:
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = (
        "app_name",
        "after",
        "revision",
        "is_dry_run",
        "selected_resources",
        "deadline",
    )

    def __init__(
        self,
        *,
        app_name: str,
        after: dict[str, Any] | None = None,
        revision: str | None = None,
        is_dry_run: bool | str = False,
        selected_resources: list[dict[str, Any]] | None = None,
        degraded_grace_seconds: float = 60.0,
        deadline: str | None = None,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(argocd_conn_id=argocd_conn_id, deferrable=deferrable, **kwargs)
        self.app_name = app_name
        self.after = after
        self.revision = revision
        self.is_dry_run = is_dry_run
        self.selected_resources = selected_resources
        self.degraded_grace_seconds = degraded_grace_seconds
        self.deadline = deadline
        self._seen = Seen()

    def poke(self, context: Context) -> bool:
        spec = build_wait_spec(
            self.after,
            self.revision,
            as_bool(self.is_dry_run),
            self.selected_resources,
            self.degraded_grace_seconds,
        )
        with ArgoCDHook(argocd_conn_id=self.argocd_conn_id) as hook, airflow_errors(f"app {self.app_name!r}"):
            verdict = evaluate(hook.get_application(self.app_name), spec, self._seen)
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
            after=self.after,
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
    :param deferrable: defer to the triggerer instead of occupying a worker slot (default:
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("app_name", "stuck_after_seconds")

    def __init__(
        self,
        *,
        app_name: str,
        stuck_after_seconds: float | str = 300.0,
        argocd_conn_id: str = ArgoCDHook.default_conn_name,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(argocd_conn_id=argocd_conn_id, deferrable=deferrable, **kwargs)
        self.app_name = app_name
        self.stuck_after_seconds = stuck_after_seconds
        self._first_poke: float | None = None

    def poke(self, context: Context) -> bool:
        with ArgoCDHook(argocd_conn_id=self.argocd_conn_id) as hook:
            items = hook.list_applications(name=self.app_name).get("items") or []
        if self._first_poke is None:
            self._first_poke = time.monotonic()
        stuck_after = timedelta(seconds=float(self.stuck_after_seconds))
        verdict = evaluate_deletion(
            items[0] if items else None, stuck_after, time.monotonic() - self._first_poke
        )
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

"""One component of ``platform_deploy`` as one deferrable task: render, upsert, sync, wait,
verify, and roll back when the run asks for it.

The generic half (upsert, sync, the wait on our own operation, terminate at the deadline) is
:class:`~base_platform.argocd.operators.ArgoCDSyncApplicationOperator`; this adds what only a
deploy knows: the run's plan, the overlay, the component's checks, and the rollback policy.
The task's log tells each step; its XCom ``outcome`` tells the summary what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from base_platform.argocd import actions
from base_platform.argocd.adapter import airflow_errors
from base_platform.argocd.operators import ArgoCDSyncApplicationOperator
from base_platform.catalog.loader import environment
from base_platform.catalog.models import Catalog, Component
from base_platform.catalog.render import render_application
from base_platform.deploy import tasks


def planned_run(context: Mapping[str, Any]) -> dict[str, Any]:
    """What the ``plan`` task decided for this run."""
    planned = context["ti"].xcom_pull(task_ids="plan")
    if not planned:
        raise AirflowFailException("the plan task produced no plan")
    return dict(planned)


class DeployComponentOperator(ArgoCDSyncApplicationOperator):
    """Deploy one catalog component as the run's plan says.

    :param component: the catalog entry.
    :param catalog: the whole catalog (bootstrap and checks read it).
    """

    template_fields = ()  # everything comes from the plan at run time

    def __init__(self, *, component: Component, catalog: Catalog, **kwargs: Any) -> None:
        super().__init__(app_name=component.name, sync_options=list(component.sync_options), **kwargs)
        self.component = component
        self.catalog = catalog

    def execute(self, context: Context) -> Any:
        planned = planned_run(context)
        name = self.component.name
        if name not in planned["selected"]:
            raise AirflowSkipException(f"{name} is not selected in this run")
        env = environment(planned["environment"])
        self.revision, self.is_dry_run = planned["revision"], planned["dry_run"]
        self.prune = bool(context["params"].get("prune"))
        self.application = render_application(self.component, env, planned["revision"])
        self.wait_timeout = float(min(self.component.timeout, env.wave_timeouts[self.component.wave]))
        self.log.info("Step 1/4 render: %s at %s in %s", name, planned["revision"], env.name)
        if name == "argocd":
            with self.hook() as hook, airflow_errors("bootstrap"):
                booted = tasks.bootstrap(self.catalog, env.name, hook, planned["dry_run"])
            self.log.info(
                "Bootstrap: Argo CD %s, AppProjects %s", booted["argocd_version"], booted["projects"]
            )
        self.log.info(
            "Step 2/4 upsert and sync; step 3/4 waits for that sync (up to %.0f s)", self.wait_timeout
        )
        result = super().execute(context)
        self._outcome(context, result)  # reached only for a dry run of an app that does not exist
        return result

    def execute_complete(self, context: Context, event: dict[str, Any], started: dict[str, Any]) -> Any:
        handoff = actions.Started.from_dict(started)
        planned = planned_run(context)
        try:
            message = self.judge(event, handoff)
        except AirflowFailException as failure:
            self._outcome(context, {"failure": str(failure)})
            self._roll_back_or_raise(context, planned, handoff, failure)
            raise
        if handoff.dry_run:
            return self._outcome(context, handoff.to_dict() | {"verdict": message})
        self.log.info("Step 4/4 verify: the component's own checks")
        with self.hook() as hook:
            try:
                checks = tasks.verify(self.component, tasks.check_context(self.catalog, planned, hook))
            except tasks.DeployError as exc:
                self._outcome(context, {"failure": str(exc)})
                raise AirflowFailException(str(exc)) from exc
        return self._outcome(context, handoff.to_dict() | {"verdict": message, "checks": checks})

    def _roll_back_or_raise(
        self, context: Context, planned: Mapping[str, Any], handoff: actions.Started, failure: Exception
    ) -> None:
        """With ``rollback_on_failure``, roll back to what ran before this sync, and wait for it."""
        if not context["params"].get("rollback_on_failure") or planned["dry_run"]:
            return
        if handoff.previous_history_id is None:
            self.log.warning("Nothing to roll back to: %s had no earlier deployment", self.app_name)
            return
        self.log.warning("Rolling %s back to history %s", self.app_name, handoff.previous_history_id)
        with self.hook() as hook, airflow_errors("rollback"):
            rollback, _ = actions.start_rollback(hook, self.app_name, handoff.previous_history_id)
        self.wait_for(rollback, context, "rollback_complete", failure=str(failure))

    def rollback_complete(
        self, context: Context, event: dict[str, Any], started: dict[str, Any], failure: str
    ) -> None:
        """The deploy failed either way; say whether the rollback put the old revision back."""
        rollback = actions.Started.from_dict(started)
        try:
            self.judge(event, rollback)
        except AirflowException as exc:
            self._outcome(context, {"failure": f"{failure}; the rollback failed too: {exc}"})
            raise AirflowFailException(f"{failure}; the rollback failed too: {exc}") from exc
        done = (
            f"{failure}; rolled back to history {rollback.history_id} ({str(rollback.revision)[:12]}), pinned"
        )
        self._outcome(context, {"failure": done, "rolled_back": True})
        raise AirflowFailException(done)

    def _outcome(self, context: Context, outcome: dict[str, Any]) -> dict[str, Any]:
        context["ti"].xcom_push(key="outcome", value=outcome)
        return outcome

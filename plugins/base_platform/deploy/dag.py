"""Build ``platform_deploy`` from the catalog: one TaskGroup per wave, one per component.

The DAG always holds every component so the grid stays stable; the ``plan`` task decides at
run time which are selected, and the others skip. A component's first task waits for the
``verify`` of each component it depends on (trigger rule ``none_failed``, so a dependency
that was not selected does not block it), which makes independent branches deploy in
parallel and a failure stop only what depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Context, Param, TaskGroup, TriggerRule, task
from airflow.sdk.definitions.xcom_arg import PlainXComArg, XComArg
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import ArgoCDSyncApplicationOperator, ArgoCDUpsertApplicationOperator
from base_platform.argocd.sensors import ArgoCDApplicationSensor
from base_platform.catalog.loader import load_environment
from base_platform.catalog.models import Catalog, Component, Wave
from base_platform.dag_defaults import (
    POLL_SECONDS,
    components_param,
    environment_param,
    platform_dag,
    waves_param,
)
from base_platform.deploy import tasks
from base_platform.plan.deploy import topological_order

log = logging.getLogger(__name__)
DAG_ID = "platform_deploy"
REVISION_PATTERN = r"^$|^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"


def deploy_params(catalog: Catalog) -> dict[str, Param]:
    """Checked by Airflow when a run is triggered: a bad value is a 400, not a failed run."""
    return {
        "environment": environment_param(),
        "waves": waves_param(
            "Waves to deploy; dependencies in other waves are checked, not redeployed", min_items=1
        ),
        "components": components_param(catalog, "Only these components (default: all in the selected waves)"),
        "target_revision": Param(
            "", type="string", pattern=REVISION_PATTERN, description="Git revision; empty: the overlay's"
        ),
        "dry_run": Param(False, type="boolean", description="Report what would change; change nothing"),
        "prune": Param(False, type="boolean", description="Delete resources no longer in Git"),
        "rollback_on_failure": Param(
            False, type="boolean", description="Roll a failed component back to what it ran before"
        ),
    }


class DeployApprovalOperator(ApprovalOperator):
    """A human approves before the first sync, where the overlay asks for it (prod)."""

    def execute(self, context: Context) -> Any:
        params = context["params"]
        env = load_environment(params["environment"])
        if not env.approval_required or params.get("dry_run"):
            self.log.info("No approval needed: %s (dry run: %s)", env.name, params.get("dry_run"))
            return None
        return super().execute(context)


def _operator(result: XComArg) -> Any:
    """The task behind a TaskFlow call's result, for wiring edges."""
    return cast(PlainXComArg, result).operator


def _planned(context: Mapping[str, Any]) -> Mapping[str, Any]:
    planned = context["ti"].xcom_pull(task_ids="plan")
    if not planned:
        raise AirflowFailException("the plan task produced no plan")
    return dict(planned)


def build_platform_deploy_dag(catalog: Catalog, doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        max_active_runs=1,
        doc_md=doc_md or __doc__ or "",
        tags=["deploy", "argocd"],
        params=deploy_params(catalog),
        render_template_as_native_obj=True,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    ) as dag:

        @task
        def plan(**context: Any) -> dict[str, Any]:
            try:
                return tasks.plan_run(catalog, context["params"], ArgoCDHook())
            except tasks.DeployError as exc:
                raise AirflowFailException(str(exc)) from exc

        planned = plan()
        approve = DeployApprovalOperator(
            task_id="approve",
            subject="Deploy the BASE platform to {{ params.environment }}",
            body="Waves: {{ params.waves }}; components: {{ params.components or 'all' }}; "
            "revision: {{ params.target_revision or 'overlay default' }}",
            fail_on_reject=True,
            retries=0,  # a retry would ask the human again after a Reject
        )
        planned >> approve
        groups: dict[str, dict[str, Any]] = {}
        gates: list[Any] = []
        for wave in Wave:
            members = [c for c in topological_order(catalog.components) if c.wave is wave]
            with TaskGroup(wave.value, tooltip=f"Wave {wave.position}: {wave.value}"):
                for component in members:
                    groups[component.name] = _component_group(component, catalog)
                    approve >> groups[component.name]["first"]
                gates.append(
                    _wave_gate(
                        catalog, wave, [groups[c.name]["verify"] for c in members], [c.name for c in members]
                    )
                )
        for component in catalog.components:
            for dep in component.depends_on:
                groups[dep]["verify"] >> groups[component.name]["first"]
        # The summary reads every task's final state, so it waits for all of them, gates included.
        _summary(catalog) << [*gates, *(t for g in groups.values() for t in (g["verify"], g["rollback"]))]
    return dag


def _render_task(component: Component) -> Any:
    @task(task_id="render", trigger_rule=TriggerRule.NONE_FAILED, multiple_outputs=True)
    def render(**context: Any) -> dict[str, Any]:
        planned = _planned(context)
        if component.name not in planned["selected"]:
            raise AirflowSkipException(f"{component.name} is not selected in this run")
        return tasks.render(component, planned)

    return render()


def _bootstrap_task(catalog: Catalog) -> Any:
    @task(task_id="bootstrap", trigger_rule=TriggerRule.NONE_FAILED)
    def bootstrap(**context: Any) -> dict[str, Any]:
        planned = _planned(context)
        if "argocd" not in planned["selected"]:
            raise AirflowSkipException("Argo CD is not selected in this run")
        return tasks.bootstrap(catalog, planned["environment"], ArgoCDHook(), planned["dry_run"])

    return _operator(bootstrap())


def _verify_task(component: Component, catalog: Catalog) -> Any:
    @task(task_id="verify")
    def verify(**context: Any) -> list[dict[str, Any]]:
        if context["params"].get("dry_run"):
            raise AirflowSkipException("dry run: nothing was changed, so nothing to verify")
        ctx = tasks.check_context(catalog, _planned(context), ArgoCDHook())
        try:
            return tasks.verify(component, ctx)
        except tasks.DeployError as exc:
            raise AirflowFailException(str(exc)) from exc

    return _operator(verify())


def _rollback_task(component: Component, sync_task_id: str) -> Any:
    @task(task_id="rollback", trigger_rule=TriggerRule.ONE_FAILED)
    def rollback(**context: Any) -> dict[str, Any]:
        params = context["params"]
        if not params.get("rollback_on_failure") or params.get("dry_run"):
            raise AirflowSkipException("rollback_on_failure is off")
        previous = context["ti"].xcom_pull(task_ids=sync_task_id, key="previous_history_id")
        try:
            return tasks.rollback(component.name, previous, ArgoCDHook(), component.timeout, POLL_SECONDS)
        except tasks.DeployError as exc:
            raise AirflowFailException(str(exc)) from exc

    return _operator(rollback())


def _component_group(component: Component, catalog: Catalog) -> dict[str, Any]:
    """render → upsert → sync → wait → verify, and rollback when sync or wait failed."""
    with TaskGroup(component.name, tooltip=f"{component.namespace} on the {component.cluster} cluster"):
        rendered = _render_task(component)
        first = _operator(rendered)
        if component.name == "argocd":
            first = _bootstrap_task(catalog)
            first >> rendered
        upsert = ArgoCDUpsertApplicationOperator(
            task_id="upsert", application=rendered["application"], is_dry_run="{{ params.dry_run }}"
        )
        sync = ArgoCDSyncApplicationOperator(
            task_id="sync",
            app_name=component.name,
            revision=rendered["revision"],
            prune="{{ params.prune }}",
            is_dry_run="{{ params.dry_run }}",
            sync_options=list(component.sync_options),
        )
        wait = ArgoCDApplicationSensor.after(
            sync,
            task_id="wait",
            deadline=rendered["deadline"],
            timeout=component.timeout,
            poke_interval=POLL_SECONDS,
        )
        verified = _verify_task(component, catalog)
        rolled_back = _rollback_task(component, sync.task_id)
        upsert >> sync
        wait >> verified
        [sync, wait] >> rolled_back
    return {"first": first, "verify": verified, "rollback": rolled_back}


def _wave_gate(catalog: Catalog, wave: Wave, verifies: list[Any], names: list[str]) -> Any:
    @task(task_id="gate", trigger_rule=TriggerRule.NONE_FAILED)
    def gate(**context: Any) -> list[dict[str, Any]]:
        planned = _planned(context)
        selected = [n for n in names if n in planned["selected"]]
        if not selected or planned["dry_run"]:
            raise AirflowSkipException(f"nothing deployed in wave {wave.value}")
        try:
            return tasks.gate(wave, selected, tasks.check_context(catalog, planned, ArgoCDHook()))
        except tasks.DeployError as exc:
            raise AirflowFailException(str(exc)) from exc

    gate_task = _operator(gate())
    gate_task << verifies
    return gate_task


def _summary(catalog: Catalog) -> Any:
    @task(task_id="summary", trigger_rule=TriggerRule.ALL_DONE)
    def summary(**context: Any) -> dict[str, Any]:
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids="plan")
        if not planned:
            raise AirflowFailException(
                "no plan: the run was refused before deploying anything (see the plan task)"
            )
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        report = tasks.summarize(catalog, planned, states, ArgoCDHook())
        ti.xcom_push(key="report", value=report)
        log.info("Deploy report:\n%s", tasks.format_report(report))
        if not report["ok"]:
            failed = [r["component"] + ": " + r["verdict"] for r in report["components"] if not r["ok"]]
            raise AirflowFailException("deploy failed: " + "; ".join(failed))
        return report

    return _operator(summary())

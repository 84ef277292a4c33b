"""Build ``platform_deploy`` from the plan's graph (:func:`base_platform.plan.graph.deploy_graph`).

``plan → approve →`` one deferrable task per component, in its wave's group ``→ summary``. The
DAG always holds every component so the grid stays stable; the ``plan`` task decides at run
time which are selected, and the others skip. Each wave ends with a gate, and the next wave
starts only after it: a failed gate stops every later component that has not started.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Context, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.adapter import airflow_errors
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.artifacts import write_report
from base_platform.auth.roles import approvers, load_roles
from base_platform.catalog.loader import environment
from base_platform.catalog.models import Catalog, Wave
from base_platform.dag_defaults import (
    POLL_SECONDS,
    components_param,
    environment_param,
    platform_dag,
    waves_param,
)
from base_platform.deploy import tasks
from base_platform.deploy.component import DeployComponentOperator, planned_run
from base_platform.graph_builder import build_tasks
from base_platform.plan.graph import Kind, Node, deploy_graph

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
    """A human approves before the first sync, where the overlay asks for it (prod).

    Only the overlay's approvers may answer, never the user who triggered the run, and an
    approval left unanswered past the overlay's timeout fails the run.
    """

    def execute(self, context: Context) -> Any:
        params = context["params"]
        env = environment(params["environment"])
        if not env.approval_required or params.get("dry_run"):
            self.log.info("No approval needed: %s (dry run: %s)", env.name, params.get("dry_run"))
            return None
        requester = context["dag_run"].triggering_user_name
        allowed = approvers(env.approval.users, env.approval.roles, load_roles(), exclude=requester)
        if not allowed:
            raise AirflowFailException(
                f"no one may approve: the {env.name} approvers {env.approval} are only {requester!r}, "
                "who triggered this run"
            )
        self.assigned_users = [{"id": user, "name": user} for user in allowed]
        self.response_timeout = timedelta(seconds=env.approval.timeout)
        self.log.info(
            "Waiting up to %s for one of %s to approve (requested by %s)",
            self.response_timeout,
            ", ".join(allowed),
            requester,
        )
        return super().execute(context)


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
        build_tasks(deploy_graph(catalog), lambda node, common: _task(catalog, node, common))
    return dag


def _task(catalog: Catalog, node: Node, common: dict[str, Any]) -> Any:
    """The task of one node of the deploy graph."""
    if node.kind is Kind.COMPONENT:
        return DeployComponentOperator(
            component=catalog.component(node.component),
            catalog=catalog,
            poll_interval=POLL_SECONDS,
            **common,
        )
    if node.kind is Kind.APPROVE:
        return DeployApprovalOperator(
            subject="Deploy the BASE platform to {{ params.environment }}",
            body="Waves: {{ params.waves }}; components: {{ params.components or 'all' }}; "
            "revision: {{ params.target_revision or 'overlay default' }}",
            fail_on_reject=True,
            retries=0,  # a retry would ask the human again after a Reject
            **common,
        )
    makers = {Kind.PLAN: _plan, Kind.GATE: _gate, Kind.SUMMARY: _summary}
    return makers[node.kind](catalog, node).override(**common)()


def _plan(catalog: Catalog, node: Node) -> Any:
    @task
    def plan(**context: Any) -> dict[str, Any]:
        with ArgoCDHook() as hook, airflow_errors():
            try:
                return tasks.plan_run(catalog, context["params"], hook)
            except tasks.DeployError as exc:
                raise AirflowFailException(str(exc)) from exc

    return plan


def _gate(catalog: Catalog, node: Node) -> Any:
    assert node.wave is not None
    wave: Wave = node.wave
    names = [c.name for c in catalog.components if c.wave is wave]

    @task
    def gate(**context: Any) -> list[dict[str, Any]]:
        planned = planned_run(context)
        selected = [n for n in names if n in planned["selected"]]
        if not selected or planned["dry_run"]:
            raise AirflowSkipException(f"nothing deployed in wave {wave.value}")
        with ArgoCDHook() as hook:
            try:
                return tasks.gate(wave, selected, tasks.check_context(catalog, planned, hook))
            except tasks.DeployError as exc:
                raise AirflowFailException(f"{exc}; later waves will not start") from exc

    return gate


def _summary(catalog: Catalog, node: Node) -> Any:
    component_ids = [f"{c.wave.value}.{c.name}" for c in catalog.components]

    @task
    def summary(**context: Any) -> dict[str, Any]:
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids="plan")
        if not planned:
            raise AirflowFailException(
                "no plan: the run was refused before deploying anything (see the plan task)"
            )
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        outcomes = {task_id: ti.xcom_pull(task_ids=task_id, key="outcome") for task_id in component_ids}
        with ArgoCDHook() as hook:
            report = tasks.summarize_deploy(catalog, planned, states, outcomes, hook)
        report = report | {
            "run_id": ti.run_id,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        ti.xcom_push(key="report", value=report)
        write_report(
            ti.dag_id, ti.run_id, "deploy", report, tasks.format_report(report)
        )  # the platform page's
        log.info("Deploy report:\n%s", tasks.format_report(report))
        if not report["ok"]:
            failed = [r["component"] + ": " + r["verdict"] for r in report["components"] if not r["ok"]]
            raise AirflowFailException("deploy failed: " + "; ".join(failed))
        return report

    return summary

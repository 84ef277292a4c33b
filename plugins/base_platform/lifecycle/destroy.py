"""Build ``platform_destroy`` from the plan's graph (:func:`base_platform.plan.graph.destroy_graph`).

``guard →`` one task per app (delete with cascade, then wait until gone) ``→ summary``. A
component is deleted only after every component that depends on it is gone, so teardown runs
in reverse dependency order, with independent branches in parallel. The guard refuses a run
whose ``confirm`` is not the environment's name, prod without ``allow_prod``, a selection that
would leave deployed apps without what they depend on, and the control plane (Argo CD, this
Airflow, and what they run on) unless ``include_control_plane`` is set, which prod refuses.
When it is set, the control plane goes last.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Context, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import ArgoCDDeleteApplicationOperator
from base_platform.argocd.status import evaluate_deletion
from base_platform.artifacts import write_report
from base_platform.catalog.models import Catalog
from base_platform.dag_defaults import (
    POLL_SECONDS,
    components_param,
    environment_param,
    platform_dag,
    waves_param,
)
from base_platform.graph_builder import build_tasks
from base_platform.plan.deploy import SelectionError, select
from base_platform.plan.graph import Kind, Node, destroy_graph
from base_platform.plan.teardown import dependents, teardown_order

log = logging.getLogger(__name__)
DAG_ID = "platform_destroy"
DEFAULT_STUCK_AFTER = 600


def destroy_params(catalog: Catalog) -> dict[str, Param]:
    return {
        "environment": environment_param(),
        "waves": waves_param("Waves to tear down (or choose components)", default=[]),
        "components": components_param(catalog, "Apps to tear down (or choose waves)"),
        "confirm": Param(
            "", type="string", maxLength=20, description="Type the environment's name to confirm"
        ),
        "allow_prod": Param(False, type="boolean", description="Required to tear down prod"),
        "include_control_plane": Param(
            False,
            type="boolean",
            description="Also tear down Argo CD, this Airflow and what they run on (never in prod)",
        ),
        "stuck_after_seconds": Param(
            DEFAULT_STUCK_AFTER,
            type="integer",
            minimum=10,
            maximum=86400,
            description="An app still deleting after this long is reported stuck on its finalizers",
        ),
    }


class GuardError(ValueError):
    """The guard refuses this teardown; the message says why."""


def guard(catalog: Catalog, params: Mapping[str, Any], live: set[str]) -> list[str]:
    """What to delete, in order (the control plane last); or a refusal that names the reason."""
    env = params["environment"]
    if params.get("confirm") != env:
        raise GuardError(f"confirm must be {env!r}, the environment's name, to destroy it")
    if env == "prod" and not params.get("allow_prod"):
        raise GuardError("refusing to destroy prod: set allow_prod")
    if env == "prod" and params.get("include_control_plane"):
        raise GuardError("refusing include_control_plane in prod: the control plane is never torn down there")
    if not params.get("waves") and not params.get("components"):
        raise GuardError("choose waves or components to destroy")
    try:
        selected = select(catalog, params.get("waves") or None, params.get("components") or None).selected
    except SelectionError as exc:
        raise GuardError(str(exc)) from exc
    control_plane = sorted(set(selected) & catalog.control_plane)
    if control_plane and not params.get("include_control_plane"):
        raise GuardError(
            "refusing to destroy the control plane (Argo CD, this Airflow and what they run on): "
            f"{', '.join(control_plane)}; set include_control_plane to tear it down too"
        )
    stranded = sorted(dependents(catalog, selected) & live)
    if stranded:
        raise GuardError(
            "these deployed apps depend on the selection and are not selected: " + ", ".join(stranded)
        )
    order = teardown_order(catalog, selected)
    return [n for n in order if n not in catalog.control_plane] + [
        n for n in order if n in catalog.control_plane
    ]


def _selected(context: Mapping[str, Any]) -> list[str]:
    return list(context["ti"].xcom_pull(task_ids="guard") or [])


class DestroyComponentOperator(ArgoCDDeleteApplicationOperator):
    """Delete one catalog component if the guard selected it, and wait until it is gone."""

    def execute(self, context: Context) -> Any:
        if self.app_name not in _selected(context):
            raise AirflowSkipException(f"{self.app_name} is not selected")
        return super().execute(context)


def summarize_teardown(hook: ArgoCDHook, names: list[str], stuck_after: int) -> dict[str, Any]:
    """Which apps are gone, and which are still there once their tasks gave up waiting
    (finalizers, resources still present)."""
    rows = []
    for name in names:
        items = hook.list_applications(name=name).get("items") or []
        verdict = evaluate_deletion(items[0] if items else None, timedelta(seconds=stuck_after), stuck_after)
        rows.append({"app": name, "gone": verdict.done, "detail": verdict.reason})
    return {"apps": rows, "ok": all(r["gone"] for r in rows)}


def build_platform_destroy_dag(catalog: Catalog, doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        max_active_runs=1,
        doc_md=doc_md or __doc__ or "",
        tags=["destroy", "argocd"],
        params=destroy_params(catalog),
        render_template_as_native_obj=True,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        build_tasks(destroy_graph(catalog), lambda node, common: _task(catalog, node, common))
    return dag


def _task(catalog: Catalog, node: Node, common: dict[str, Any]) -> Any:
    """The task of one node of the destroy graph."""
    if node.kind is Kind.COMPONENT:
        return DestroyComponentOperator(
            app_name=node.component,
            cascade=True,
            wait_for_completion=True,
            stuck_after_seconds="{{ params.stuck_after_seconds }}",
            poll_interval=POLL_SECONDS,
            **common,
        )
    if node.kind is Kind.PLAN:
        return _guard(catalog).override(**common)()
    return _summary().override(**common)()


def _guard(catalog: Catalog) -> Any:
    @task
    def guard_task(**context: Any) -> list[str]:
        with ArgoCDHook() as hook:
            live = {a["metadata"]["name"] for a in hook.list_applications().get("items") or []}
        try:
            order = guard(catalog, context["params"], live)
        except GuardError as exc:
            raise AirflowFailException(str(exc)) from exc
        log.info("Tearing down, dependents first: %s", ", ".join(order))
        return order

    return guard_task


def _summary() -> Any:
    @task
    def summary(**context: Any) -> dict[str, Any]:
        ti, params = context["ti"], context["params"]
        names = _selected(context)
        if not names:
            raise AirflowFailException("the guard refused this run; nothing was deleted (see the guard task)")
        with ArgoCDHook() as hook:
            body = summarize_teardown(hook, names, int(params["stuck_after_seconds"]))
        body |= {"kind": DAG_ID, "environment": params["environment"], "order": names}
        lines = [f"- {r['app']}: {'gone' if r['gone'] else r['detail']}" for r in body["apps"]]
        markdown = f"# Destroy in {params['environment']}\n\n" + "\n".join(lines) + "\n"
        body["paths"] = write_report(DAG_ID, ti.run_id, "destroy", body, markdown)
        log.info("Destroy report:\n%s", markdown)
        if not body["ok"]:
            left = [r["app"] for r in body["apps"] if not r["gone"]]
            raise AirflowFailException(f"not gone: {', '.join(left)}")
        return body

    return summary

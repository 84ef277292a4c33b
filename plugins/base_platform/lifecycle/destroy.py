"""Build ``platform_destroy``: guard → per app, delete with cascade and wait until gone → summary.

A component is deleted only after every component that depends on it is gone, so teardown
runs in reverse dependency order, with independent branches in parallel. The guard refuses
a run whose ``confirm`` is not the environment's name, prod without ``allow_prod``, and a
selection that would leave deployed apps without what they depend on.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.operators import request_deletion
from base_platform.argocd.sensors import ArgoCDApplicationDeletedSensor
from base_platform.argocd.status import deletion_verdict
from base_platform.artifacts import write_report
from base_platform.catalog.models import Catalog, Component
from base_platform.dag_defaults import (
    POLL_SECONDS,
    components_param,
    environment_param,
    platform_dag,
    waves_param,
)
from base_platform.plan.deploy import SelectionError, select
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
        "stuck_after_seconds": Param(
            DEFAULT_STUCK_AFTER,
            type="integer",
            minimum=10,
            maximum=86400,
            description="An app still deleting after this long is reported stuck on its finalizers",
        ),
    }


def guard(catalog: Catalog, params: dict[str, Any], live: set[str]) -> list[str]:
    """What to delete, in order; or a refusal that names the reason."""
    env = params["environment"]
    if params.get("confirm") != env:
        raise AirflowFailException(f"confirm must be {env!r}, the environment's name, to destroy it")
    if env == "prod" and not params.get("allow_prod"):
        raise AirflowFailException("refusing to destroy prod: set allow_prod")
    if not params.get("waves") and not params.get("components"):
        raise AirflowFailException("choose waves or components to destroy")
    try:
        selected = select(catalog, params.get("waves") or None, params.get("components") or None).selected
    except SelectionError as exc:
        raise AirflowFailException(str(exc)) from exc
    stranded = sorted(dependents(catalog, selected) & live)
    if stranded:
        raise AirflowFailException(
            "these deployed apps depend on the selection and are not selected: " + ", ".join(stranded)
        )
    return teardown_order(catalog, selected)


def _selected(context: Any) -> list[str]:
    return list(context["ti"].xcom_pull(task_ids="guard") or [])


def _component_group(component: Component) -> tuple[Any, Any]:
    with TaskGroup(component.name, tooltip=f"{component.namespace} on the {component.cluster} cluster"):

        @task(task_id="delete", trigger_rule=TriggerRule.NONE_FAILED)
        def delete(**context: Any) -> bool:
            if component.name not in _selected(context):
                raise AirflowSkipException(f"{component.name} is not selected")
            try:
                return request_deletion(ArgoCDHook(), component.name, cascade=True)
            except ArgoCDAPIError as exc:
                if exc.is_permanent:
                    raise AirflowFailException(str(exc)) from exc
                raise

        deleted = delete()
        gone = ArgoCDApplicationDeletedSensor(
            task_id="gone",
            app_name=component.name,
            stuck_after_seconds="{{ params.stuck_after_seconds }}",
            poke_interval=POLL_SECONDS,
            timeout=DEFAULT_STUCK_AFTER * 4,
        )
        deleted >> gone
    return deleted, gone


def summarize(hook: ArgoCDHook, names: list[str], stuck_after: int) -> dict[str, Any]:
    """Which apps are gone, and which are stuck (finalizers, resources still present)."""
    rows = []
    for name in names:
        items = hook.list_applications(name=name).get("items") or []
        verdict = deletion_verdict(items[0] if items else None, timedelta(seconds=stuck_after))
        rows.append({"app": name, "gone": verdict.done, "stuck": verdict.failed, "detail": verdict.reason})
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

        @task
        def guard_task(**context: Any) -> list[str]:
            live = {a["metadata"]["name"] for a in ArgoCDHook().list_applications().get("items") or []}
            order = guard(catalog, context["params"], live)
            log.info("Tearing down, dependents first: %s", ", ".join(order))
            return order

        guarded = guard_task.override(task_id="guard")()
        groups = {c.name: _component_group(c) for c in catalog.components}
        for component in catalog.components:
            guarded >> groups[component.name][0]
            for dep in component.depends_on:
                groups[component.name][1] >> groups[dep][0]  # dependents gone before their dependency

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def summary(**context: Any) -> dict[str, Any]:
            ti, params = context["ti"], context["params"]
            names = _selected(context)
            if not names:
                raise AirflowFailException(
                    "the guard refused this run; nothing was deleted (see the guard task)"
                )
            body = summarize(ArgoCDHook(), names, int(params["stuck_after_seconds"]))
            body |= {"kind": DAG_ID, "environment": params["environment"], "order": names}
            lines = [f"- {r['app']}: {'gone' if r['gone'] else r['detail']}" for r in body["apps"]]
            markdown = f"# Destroy in {params['environment']}\n\n" + "\n".join(lines) + "\n"
            body["paths"] = write_report(DAG_ID, ti.run_id, "destroy", body, markdown)
            log.info("Destroy report:\n%s", markdown)
            if not body["ok"]:
                left = [r["app"] for r in body["apps"] if not r["gone"]]
                raise AirflowFailException(f"not gone: {', '.join(left)}")
            return body

        summary() << [g[1] for g in groups.values()]
    return dag

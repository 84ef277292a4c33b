"""Build ``platform_validate``: one task per scope, then a report that judges them all.

Each scope task runs every one of its checks and never fails on a failed check, so the grid
shows which scopes ran and the report task always sees every result. Only the report fails
the run, and only when the verdict is ``failed``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.artifacts import write_report
from base_platform.catalog.loader import environment
from base_platform.catalog.models import Catalog
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult, Verdict, validation_markdown, validation_report
from base_platform.checks.suite import SCOPES, run_scope, scopes_of
from base_platform.dag_defaults import environment_param, platform_dag

log = logging.getLogger(__name__)
DAG_ID = "platform_validate"


def validate_params() -> dict[str, Param]:
    return {
        "environment": environment_param(),
        "scope": Param("all", type="string", enum=list(SCOPES), description="Which checks to run"),
        "revision": Param(
            "", type="string", maxLength=200, description="Revision apps must be at; empty: the overlay's"
        ),
    }


def _scope_task(catalog: Catalog, scope: str) -> Any:
    @task(task_id=scope)
    def run(**context: Any) -> list[dict[str, Any]]:
        params = context["params"]
        if scope not in scopes_of(params["scope"]):
            raise AirflowSkipException(f"scope {params['scope']} does not include {scope}")
        env = environment(params["environment"])
        with ArgoCDHook() as hook:
            results = run_scope(CheckContext(hook, catalog, env, params.get("revision", "")), scope)
        for result in results:
            log.info("%s", result.line())
        return [r.to_dict() for r in results]

    return run()


def _collect(ti: Any, scopes: list[str]) -> list[CheckResult]:
    """Every scope's results; a scope task that crashed counts as one failed check."""
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    results: list[CheckResult] = []
    for scope in scopes:
        rows = ti.xcom_pull(task_ids=f"checks.{scope}")
        if rows is None:
            state = states.get(f"checks.{scope}")
            results.append(CheckResult("scope_ran", scope, scope, False, f"the {scope} task ended {state}"))
            continue
        results.extend(CheckResult.from_dict(row) for row in rows)
    return results


def build_platform_validate_dag(catalog: Catalog, doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        doc_md=doc_md or __doc__ or "",
        tags=["validate"],
        params=validate_params(),
        default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    ) as dag:
        with TaskGroup("checks", tooltip="One task per scope; a failed check does not fail its task"):
            scope_tasks = [_scope_task(catalog, s) for s in SCOPES if s != "all"]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(**context: Any) -> dict[str, Any]:
            params, ti = context["params"], context["ti"]
            results = _collect(ti, scopes_of(params["scope"]))
            now = datetime.now(UTC).replace(microsecond=0).isoformat()
            body = validation_report(params["environment"], params["scope"], results, now)
            markdown = validation_markdown(body)
            paths = write_report(DAG_ID, ti.run_id, "validation", body, markdown)
            ti.xcom_push(key="report_md", value=markdown)
            log.info("Validation %s; report: %s\n%s", body["verdict"], paths["json"], markdown)
            if body["verdict"] == Verdict.FAILED:
                raise AirflowFailException(
                    f"validation failed: {body['errors']} errors, {body['passed']}/{body['total']} passed "
                    f"(report {paths['json']})"
                )
            return {"verdict": body["verdict"], "paths": paths}

        scope_tasks >> report()
    return dag

"""Build ``platform_rollback``: plan → rollback (one mapped task per app) → wait → report.

Argo CD refuses a rollback while automated sync is on, so each rollback turns it off first
and says so in its log and in the report. Each wait is the deferrable sensor, gated on the
rollback this run requested.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.operators import pick_history_entry, start_rollback
from base_platform.argocd.sensors import ArgoCDApplicationSensor
from base_platform.argocd.status import WaitSpec, evaluate
from base_platform.artifacts import write_report
from base_platform.catalog.models import Catalog, Wave
from base_platform.dag_defaults import POLL_SECONDS, components_param, environment_param, platform_dag
from base_platform.plan.teardown import teardown_order

log = logging.getLogger(__name__)
DAG_ID = "platform_rollback"
TO_PATTERN = r"^(previous|[1-9][0-9]{0,8})$"


def rollback_params(catalog: Catalog) -> dict[str, Param]:
    return {
        "environment": environment_param(),
        "components": components_param(catalog, "Apps to roll back (or choose a wave)"),
        "wave": Param(
            "",
            type="string",
            enum=["", *(w.value for w in Wave)],
            description="Roll back every app of a wave",
        ),
        "to": Param("previous", type="string", pattern=TO_PATTERN, description="A history id, or previous"),
    }


def selection(catalog: Catalog, components: list[str], wave: str) -> list[str]:
    """The apps to roll back, dependents first; refuses an empty or ambiguous choice."""
    if not components and not wave:
        raise AirflowFailException("choose components or a wave to roll back")
    names = components or [c.name for c in catalog.in_waves({Wave(wave)})]
    if components and wave:
        outside = [n for n in components if catalog.component(n).wave.value != wave]
        if outside:
            raise AirflowFailException(f"components not in wave {wave}: {', '.join(outside)}")
    return teardown_order(catalog, names)


def resolve_targets(catalog: Catalog, params: dict[str, Any], hook: ArgoCDHook) -> list[dict[str, Any]]:
    """``to`` as a history id per app, resolved once, so a retried rollback is the same one."""
    targets, missing = [], []
    for name in selection(catalog, params["components"], params["wave"]):
        app = hook.find_application(name)
        if app is None:
            missing.append(name)
            continue
        to = params["to"] if params["to"] == "previous" else int(params["to"])
        targets.append({"app_name": name, "history_id": int(pick_history_entry(app, to)["id"])})
    if missing:
        raise AirflowFailException(f"not in Argo CD, nothing to roll back: {', '.join(missing)}")
    return targets


def outcome(hook: ArgoCDHook, started: dict[str, Any]) -> dict[str, Any]:
    """One row of the report, judged again from Argo CD: is the rollback done?"""
    spec = WaitSpec(
        requested_at=datetime.fromisoformat(started["requested_at"]), revision=started["revision"]
    )
    verdict = evaluate(hook.get_application(started["app_name"]), spec)
    return started | {"outcome": verdict.outcome.value, "detail": verdict.reason}


def build_platform_rollback_dag(catalog: Catalog, doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        max_active_runs=1,
        doc_md=doc_md or __doc__ or "",
        tags=["rollback", "argocd"],
        params=rollback_params(catalog),
        default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    ) as dag:

        @task
        def plan(**context: Any) -> list[dict[str, Any]]:
            return resolve_targets(catalog, context["params"], ArgoCDHook())

        @task
        def rollback(app_name: str, history_id: int, **context: Any) -> dict[str, Any]:
            try:
                started = start_rollback(ArgoCDHook(), app_name, history_id, disable_auto_sync=True)
            except ArgoCDAPIError as exc:
                if exc.is_permanent:
                    raise AirflowFailException(str(exc)) from exc
                raise
            if started["auto_sync_disabled"]:
                log.warning(
                    "%s had automated sync on: turned it off so Argo CD accepts the rollback", app_name
                )
            context["ti"].xcom_push(key="rollback", value=started)
            return {k: started[k] for k in ("app_name", "requested_at", "revision")} | {"is_dry_run": False}

        started = rollback.expand_kwargs(plan())
        waited = ArgoCDApplicationSensor.partial(
            task_id="wait", poke_interval=POLL_SECONDS, timeout=1800
        ).expand_kwargs(started)

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(**context: Any) -> dict[str, Any]:
            ti, params = context["ti"], context["params"]
            hook = ArgoCDHook()
            # a list of task ids always pulls a list: one entry per mapped rollback
            rows = [outcome(hook, s) for s in ti.xcom_pull(task_ids=["rollback"], key="rollback") or [] if s]
            body = {"kind": DAG_ID, "environment": params["environment"], "to": params["to"], "apps": rows}
            lines = [
                f"- {r['app_name']}: history {r['history_id']} ({str(r['revision'])[:12]}), {r['outcome']}"
                + ("; automated sync turned off" if r["auto_sync_disabled"] else "")
                for r in rows
            ]
            markdown = (
                f"# Rollback to {params['to']} in {params['environment']}\n\n" + "\n".join(lines) + "\n"
            )
            body["paths"] = write_report(DAG_ID, ti.run_id, "rollback", body, markdown)
            log.info("Rollback report:\n%s", markdown)
            not_done = [r["app_name"] for r in rows if r["outcome"] != "done"]
            if not rows or not_done:
                raise AirflowFailException(f"rollback not done for: {', '.join(not_done) or 'any app'}")
            return body

        waited >> report()
    return dag

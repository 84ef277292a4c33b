"""Build ``platform_rollback``: plan → one rollback per app (mapped; each waits for its own
operation) → report.

Each rollback pins its app (an annotation, and automated sync off, which Argo CD requires for
a rollback anyway), so the nightly drift heal leaves it alone until the next deploy of that
app. The report judges each app again from Argo CD.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.argocd.actions import ActionError, pick_history_entry
from base_platform.argocd.application import parse_pin
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.argocd.operators import ArgoCDRollbackApplicationOperator
from base_platform.argocd.status import WaitSpec, evaluate
from base_platform.artifacts import write_report
from base_platform.catalog.models import Catalog, Wave
from base_platform.dag_defaults import POLL_SECONDS, components_param, environment_param, platform_dag
from base_platform.plan.teardown import teardown_order
from base_platform.types import JSON

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
        raise ActionError("choose components or a wave to roll back")
    names = components or [c.name for c in catalog.in_waves({Wave(wave)})]
    if components and wave:
        outside = [n for n in components if catalog.component(n).wave.value != wave]
        if outside:
            raise ActionError(f"components not in wave {wave}: {', '.join(outside)}")
    return teardown_order(catalog, names)


def resolve_targets(catalog: Catalog, params: Mapping[str, Any], hook: ArgoCDHook) -> list[dict[str, Any]]:
    """``to`` as a history id and revision per app, resolved once, so a retried rollback is the same one."""
    targets, missing = [], []
    for name in selection(catalog, params["components"], params["wave"]):
        app = hook.find_application(name)
        if app is None:
            missing.append(name)
            continue
        to = params["to"] if params["to"] == "previous" else int(params["to"])
        entry = pick_history_entry(app, to)
        targets.append({"app_name": name, "history_id": int(entry["id"]), "revision": entry.get("revision")})
    if missing:
        raise ActionError(f"not in Argo CD, nothing to roll back: {', '.join(missing)}")
    return targets


def outcome(app: JSON, target: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the report, judged again from Argo CD: at the target revision, healthy, pinned?"""
    verdict = evaluate(app, WaitSpec(revision=target["revision"]))
    pin = parse_pin(app)
    pinned = pin is not None and pin.get("history") == str(target["history_id"])
    if verdict.done and not pinned:  # at the revision, but nothing stops auto-sync or a heal moving it
        state, detail = (
            "not pinned",
            f"{verdict.reason}; the rollback pin for history {target['history_id']} is missing",
        )
    else:
        state, detail = verdict.outcome.value, verdict.reason
    return dict(target) | {"outcome": state, "detail": detail, "pinned": pin}


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
            with ArgoCDHook() as hook:
                try:
                    targets = resolve_targets(catalog, context["params"], hook)
                except ActionError as exc:
                    raise AirflowFailException(str(exc)) from exc
            context["ti"].xcom_push(key="targets", value=targets)
            return [{"app_name": t["app_name"], "to": t["history_id"]} for t in targets]

        rolled_back = ArgoCDRollbackApplicationOperator.partial(
            task_id="rollback", disable_auto_sync=True, poll_interval=POLL_SECONDS, wait_timeout=1800
        ).expand_kwargs(plan())

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(**context: Any) -> dict[str, Any]:
            ti, params = context["ti"], context["params"]
            targets = ti.xcom_pull(task_ids="plan", key="targets") or []
            with ArgoCDHook() as hook:
                rows = [outcome(hook.get_application(t["app_name"]), t) for t in targets]
            body = {"kind": DAG_ID, "environment": params["environment"], "to": params["to"], "apps": rows}
            lines = [
                f"- {r['app_name']}: history {r['history_id']} ({str(r['revision'])[:12]}), {r['outcome']}"
                + ("; pinned (the drift heal leaves it alone until the next deploy)" if r["pinned"] else "")
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

        rolled_back >> report()
    return dag

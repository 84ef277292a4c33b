"""Build ``platform_drift``: detect → heal (per the overlay's policy) → report → notify.

Detection never changes anything. Healing touches only apps the overlay allowlists, and
only for drift a sync fixes; prod's policy is ``none``. The run succeeds whether or not
drift is found: the report and the notification carry the finding.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from airflow.sdk import DAG, Context, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.artifacts import write_report
from base_platform.catalog.loader import environment
from base_platform.catalog.models import Catalog
from base_platform.catalog.render import render_application
from base_platform.dag_defaults import POLL_SECONDS, environment_param, platform_dag
from base_platform.drift.compare import Finding, compare
from base_platform.drift.heal import heal, heal_targets
from base_platform.drift.report import drift_markdown, drift_report
from base_platform.notify import WebhookNotifier

log = logging.getLogger(__name__)
DAG_ID = "platform_drift"


def detect_drift(catalog: Catalog, environment_name: str, hook: ArgoCDHook) -> dict[str, Any]:
    env = environment(environment_name)
    desired = {c.name: render_application(c, env) for c in catalog.components}
    live = {a["metadata"]["name"]: a for a in hook.list_applications().get("items") or []}
    findings = compare(desired, live, hook.managed_resources)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    return drift_report(env.name, env.target_revision, len(desired), findings, now)


def build_platform_drift_dag(catalog: Catalog, doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        schedule="0 2 * * *",
        max_active_runs=1,
        doc_md=doc_md or __doc__ or "",
        tags=["drift"],
        params={
            "environment": environment_param(),
            "heal": Param(
                True, type="boolean", description="Heal as the overlay's policy allows (off: report only)"
            ),
        },
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    ) as dag:

        @task
        def detect(**context: Any) -> dict[str, Any]:
            with ArgoCDHook() as hook:
                report = detect_drift(catalog, context["params"]["environment"], hook)
            log.info("Drift findings: %s", report["counts"] or "none")
            return report

        @task
        def heal_drift(**context: Any) -> list[dict[str, Any]]:
            report = context["ti"].xcom_pull(task_ids="detect")
            env = environment(report["environment"])
            if not context["params"]["heal"]:
                raise AirflowSkipException("healing is off for this run (param heal)")
            targets = heal_targets([Finding(**f) for f in report["findings"]], env.drift)
            if not targets:
                raise AirflowSkipException(f"heal policy {env.drift.heal!r}: nothing to heal")
            with ArgoCDHook() as hook:
                return [
                    heal(
                        hook,
                        name,
                        render_application(catalog.component(name), env),
                        catalog.component(name).timeout,
                        POLL_SECONDS,
                    )
                    for name in targets
                ]

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def publish(**context: Any) -> dict[str, Any]:
            ti = context["ti"]
            report: dict[str, Any] = dict(ti.xcom_pull(task_ids="detect") or {})
            if not report:
                raise AirflowFailException("drift detection did not finish; see the detect task")
            report["healed"] = ti.xcom_pull(task_ids="heal_drift") or []
            markdown = drift_markdown(report)
            report["paths"] = write_report(DAG_ID, ti.run_id, "drift", report, markdown)
            ti.xcom_push(key="report_md", value=markdown)
            log.info("Drift report: %s\n%s", report["paths"]["json"], markdown)
            return report

        @task
        def notify(**context: Any) -> str:
            report = context["ti"].xcom_pull(task_ids="publish")
            policy = environment(report["environment"]).drift
            if not report["drifted"] and not policy.notify_when_clean:
                raise AirflowSkipException("no drift, and notify_when_clean is off")
            if not policy.notify_conn_id:
                raise AirflowSkipException(
                    f"no webhook configured for {report['environment']} (drift.notify_conn_id)"
                )
            title = f"Platform drift in {report['environment']}: " + (
                ", ".join(f"{n} {k}" for k, n in report["counts"].items()) or "clean"
            )
            WebhookNotifier(
                http_conn_id=policy.notify_conn_id, title=title, text=drift_markdown(report)
            ).notify(cast(Context, context))
            return title

        detect() >> heal_drift() >> publish() >> notify()
    return dag

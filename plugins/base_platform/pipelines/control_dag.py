"""``dataset_rollback``: the data_control module's rollback, for a data owner in the UI or over REST."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.artifacts import write_report
from base_platform.pipelines.spec import load_pipelines

log = logging.getLogger(__name__)
DAG_ID = "dataset_rollback"


def rollback_params() -> dict[str, Param]:
    return {
        "dataset": Param(
            type="string",
            enum=[pipeline.spec.name for pipeline in load_pipelines()],
            description="The dataset whose table goes back",
        ),
        "to": Param(
            type="string",
            pattern=r"^(\d+|\d{4}-\d{2}-\d{2}T\S+)$",
            description="A snapshot id, or an ISO timestamp with its zone (the snapshot current then)",
        ),
        "reason": Param(type="string", minLength=3, description="Why: kept in the table and the report"),
        "dry_run": Param(True, type="boolean", description="Only report the runs, files and rows that leave"),
    }


def build_rollback_dag() -> DAG:
    with DAG(
        dag_id=DAG_ID,
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        params=rollback_params(),
        doc_md=__doc__,
        tags=["data_control", "dataset"],
        # safe to retry: a rollback that already happened finds the table at its target
        default_args={"retries": 2, "retry_delay": timedelta(seconds=20)},
    ) as dag:

        @task
        def roll_back(**context: Any) -> dict[str, Any]:
            from base_platform.pipelines import control

            params = context["params"]
            who = context["dag_run"].triggering_user_name or "unknown"
            try:
                report = control.rollback(
                    params["dataset"],
                    control.parse_point(params["to"]),
                    dry_run=params["dry_run"],
                    who=who,
                    why=params["reason"],
                )
            except control.ControlError as exc:
                raise AirflowFailException(str(exc)) from exc  # retrying cannot help
            verb = "would leave" if report["dry_run"] else "left"
            markdown = (
                f"# {report['dataset']}: snapshot {report['from_snapshot']} -> {report['to_snapshot']}\n\n"
                f"{report['rows_leaving']} rows in {report['files_leaving']} files {verb}; "
                f"by {who}: {params['reason']}\n"
            )
            write_report(dag.dag_id, context["run_id"], "rollback", report, markdown)
            log.info(markdown.replace("\n", " "))
            return report

        roll_back()
    return dag

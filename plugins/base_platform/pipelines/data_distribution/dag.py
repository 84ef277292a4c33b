"""``publish_<dataset>``: the spec's ``distribution:`` targets, run after each commit of the dataset.

Scheduled on the dataset's Asset, so it starts when ``pipeline_<name>`` commits (and when
data_control rolls back or erases, so consumers follow). ``choose`` takes the snapshot the
newest triggering event names (a manual run may name one, or takes the current one); then one
task per target publishes it, so a failed target fails only its own task.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from airflow.sdk import DAG, Context, Param, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.dag_defaults import dataset_dag
from base_platform.pipelines.event_coordination.dataset_assets import dataset_asset, triggered_snapshots
from base_platform.pipelines.spec import Pipeline, PostgresTarget, S3Target, WebhookTarget

log = logging.getLogger(__name__)


def build_publish_dag(pipeline: Pipeline) -> DAG:
    spec = pipeline.spec
    params = {
        "snapshot_id": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d+$",
            description="A snapshot id; empty: the one the triggering event names, else the current one",
        )
    }
    with dataset_dag(
        f"publish_{spec.name}",
        schedule=[dataset_asset(spec)],
        params=params,
        doc_md=f"Publish `{spec.name}` to {', '.join(t.name for t in spec.distribution)}.\n\n{__doc__}",
        tags=["data_distribution", spec.name],
    ) as dag:

        @task
        def choose(**context: Any) -> str:
            from base_platform.pipelines.data_control.table_actions import ControlError, dataset_table
            from base_platform.pipelines.data_distribution import publishing

            try:
                table = dataset_table(spec.name)
                triggered = triggered_snapshots(context).get(spec.name)
                chosen = publishing.snapshot_to_publish(table, triggered, context["params"]["snapshot_id"])
            except (ControlError, publishing.PublishError) as exc:
                raise AirflowFailException(str(exc)) from exc
            log.info("Publishing snapshot %s of %s", chosen, spec.name)
            return str(chosen)

        snapshot = choose()
        for target in spec.distribution:

            @task(task_id=f"publish_{target.name}")
            def publish(snapshot_id: Any, target: Any = target, **context: Any) -> dict[str, Any]:
                return _publish(pipeline, target, int(snapshot_id), cast(Context, context))

            publish(snapshot)
    return dag


def _publish(pipeline: Pipeline, target: Any, snapshot_id: int, context: Context) -> dict[str, Any]:
    from base_platform.pipelines.data_control.table_actions import dataset_table
    from base_platform.pipelines.data_distribution import publishing

    table = dataset_table(pipeline.spec.name)
    try:
        if isinstance(target, PostgresTarget):
            result = publishing.publish_postgres(pipeline, table, snapshot_id, target)
        elif isinstance(target, S3Target):
            result = publishing.export_s3(pipeline, table, snapshot_id, target)
        else:
            assert isinstance(target, WebhookTarget)
            from base_platform.notify import WebhookNotifier

            text = publishing.summary_text(pipeline, table, snapshot_id)
            title = f"{pipeline.spec.name}: snapshot {snapshot_id} published"
            WebhookNotifier(http_conn_id=target.http_conn_id, title=title, text=text).notify(context)
            result = {"target": target.name, "snapshot_id": snapshot_id, "published": True}
    except publishing.PublishError as exc:
        raise AirflowFailException(str(exc)) from exc
    log.info("%s", result)
    return result

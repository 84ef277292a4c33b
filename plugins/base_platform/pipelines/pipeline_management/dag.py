"""Spec to DAG: ``pipeline_<name>`` = discover → process_shard (mapped) → commit → audit →
catalog, monitor → settle.

The tasks are thin: each calls the engine exactly as the benchmark does. ``commit`` stages the
run's snapshot on the table's ``audit`` branch; ``audit`` checks it (write-audit-publish, see
``breaker``) and publishes it to ``main``, and carries the dataset's Asset as its outlet, so a
downstream DAG scheduled on ``base.<name>`` starts after each published commit, and the event's
extra names the snapshot (``snapshot_id``, ``run``). A run that finds no new input skips the
commit and emits no event. When the audit fails, or ``settle`` counts too many failed runs in a
row, the circuit breaker opens: no event, the DAG pauses itself and the notifier says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.artifacts import artifacts_root, safe_name, write_atomically, write_report
from base_platform.dag_defaults import dataset_dag
from base_platform.pipelines.data_streaming.stream_tasks import acknowledge_task, is_stream, measure_lag
from base_platform.pipelines.event_coordination.dataset_assets import (
    dataset_asset,
    inputs_changed,
    snapshot_extra,
    source_asset,
)
from base_platform.pipelines.pipeline_management.breaker_dag import (
    audit_run,
    pause_when_open,
    settle_task,
    skip_while_open,
)
from base_platform.pipelines.pipeline_management.pipeline_plan import (
    PipelinePlan,
    PipelineStep,
    pipeline_plan,
)
from base_platform.pipelines.run_records import CommitRequest, DeriveResult, RunRecord, ShardResult
from base_platform.pipelines.spec import FileSource, Pipeline

log = logging.getLogger(__name__)


def run_key(run_id: str) -> str:
    """A file-name-safe, stable key per DAG run: a cleared and re-run run replaces its own output."""
    return safe_name(run_id)


def _interval(context: dict[str, Any]) -> dict[str, str | None]:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    return {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None}


def pipeline_params(pipeline: Pipeline) -> dict[str, Param]:
    """A run's form. An API's or a table's address stays in the spec: the connection's host and
    credentials belong to each other."""
    spec = pipeline.spec
    source = (
        {"source_uri": Param(spec.source.uri, type="string", minLength=1, description="Input: path or s3://")}
        if isinstance(spec.source, FileSource)
        else {}
    )
    return {
        **source,
        "target_uri": Param(
            spec.storage.uri, type="string", minLength=1, description="Output: path or s3://"
        ),
        "full_refresh": Param(
            False, type="boolean", description="Reprocess every input and replace all published data"
        ),
    }


def _schedule(pipeline: Pipeline) -> Any:
    """The spec's cron; for a derived pipeline any change of its inputs; for a stream its backlog."""
    if is_stream(pipeline.spec):
        return [source_asset(pipeline.spec)]
    return inputs_changed(pipeline.spec) if pipeline.spec.inputs else pipeline.spec.schedule


def _derived(pipeline: Pipeline, context: Any) -> DeriveResult | None:
    """What ``derive`` made in this run (its folder and lineage); None for a pipeline of files."""
    made = context["ti"].xcom_pull(task_ids="derive") if pipeline.spec.inputs else None
    return DeriveResult.from_json(made) if made is not None else None


def _source_of(pipeline: Pipeline, context: Any) -> str | None:
    """What ``discover`` reads: the folder ``derive`` wrote, the form's ``source_uri`` for files,
    nothing for other kinds (the spec says); None when ``derive`` found nothing new."""
    made = _derived(pipeline, context)
    if made is None:
        return str(context["params"].get("source_uri", ""))
    if made.folder is None:
        log.info("Nothing new in %s", pipeline.spec.inputs)
    return made.folder


def _commit_run(pipeline: Pipeline, results: Any, context: Any) -> RunRecord:
    """``commit``: the run's shards as one snapshot staged for the audit (see ``engine.commit``)."""
    from base_platform.pipelines.data_ingestion import sources
    from base_platform.pipelines.data_security.protection import load_key
    from base_platform.pipelines.pipeline_management import engine

    staged = tuple(ShardResult.from_json(result) for result in results or [])
    if sources.nothing_new(staged):
        raise AirflowSkipException("no new input: nothing to commit, no Asset event")
    params, made, ti = context["params"], _derived(pipeline, context), context["ti"]
    whole = made is not None and made.replace  # a derived result may be the whole dataset
    request = CommitRequest(
        run_key=run_key(context["run_id"]),
        results=staged,
        target_uri=params["target_uri"],
        interval=_interval(context),
        full_refresh=params["full_refresh"] or whole,
        started_at=ti.xcom_pull(task_ids="discover", key="started_at"),
        key=load_key(pipeline.spec.security),
        dag_run=f"pipeline_{pipeline.spec.name}/{context['run_id']}",
        publish=False,
        lineage=made.lineage if made is not None else None,
        lag=ti.xcom_pull(task_ids="discover", key="lag"),
        position=made.position if made is not None else None,
    )
    record = engine.commit(pipeline, request)
    log.info(
        "Staged snapshot %s on the audit branch: %d rows in %d files (%d quarantined) at %s GB/h",
        record.snapshot_id,
        record.rows_stored,
        record.files,
        record.rows_quarantined,
        record.gb_per_hour,
    )
    return record


Maker = Callable[..., Any]
"""Makes one step's task from its task id and trigger rule, and the output it reads, if any."""


def build_pipeline_tasks(plan: PipelinePlan, makers: Mapping[PipelineStep, Maker]) -> dict[str, Any]:
    """Each node's task, given the output it reads, then wired to all its upstream ids; by task id."""
    tasks: dict[str, Any] = {}
    for node in plan.nodes:
        common = {"task_id": node.task_id, "trigger_rule": TriggerRule(node.rule.value)}
        reads = [tasks[node.reads]] if node.reads else []
        tasks[node.task_id] = makers[node.step](common, *reads)
    for node in plan.nodes:
        for upstream in node.upstream:
            tasks[upstream] >> tasks[node.task_id]
    return tasks


def build_pipeline_dag(pipeline: Pipeline) -> DAG:
    spec = pipeline.spec
    with dataset_dag(
        f"pipeline_{spec.name}",
        schedule=_schedule(pipeline),
        params=pipeline_params(pipeline),
        doc_md=f"{spec.description}\n\n{__doc__}",
        tags=["pipeline", spec.name],
        on_failure_callback=pause_when_open(pipeline),
    ) as dag:
        build_pipeline_tasks(pipeline_plan(spec), _makers(pipeline, dag.dag_id))
    return dag


def _makers(pipeline: Pipeline, dag_id: str) -> dict[PipelineStep, Maker]:
    """How each step's task is made for this pipeline; which of them run, and in what order, is
    the plan's (``pipeline_plan``)."""
    return {**_reading_makers(pipeline), **_publishing_makers(pipeline, dag_id)}


def _call(decorated: Any) -> Maker:
    """A TaskFlow task, called with the output it reads as its one argument, if any."""
    return lambda common, *reads: decorated.override(**common)(*reads)


def _reading_makers(pipeline: Pipeline) -> dict[PipelineStep, Maker]:
    """The steps up to the shards' results: derive, discover, and process_shard (local or pods)."""
    spec = pipeline.spec

    @task
    def derive(**context: Any) -> dict[str, Any]:
        # A derived pipeline's transform over its inputs' snapshots, as the run's one input file.
        from base_platform.pipelines.data_storage.derive_io import DeriveError
        from base_platform.pipelines.event_coordination.dataset_assets import triggered_snapshots
        from base_platform.pipelines.pipeline_management import derived

        skip_while_open(pipeline)
        try:
            made = derived.derive(pipeline, context["params"]["source_uri"], triggered_snapshots(context))
        except DeriveError as exc:
            raise AirflowFailException(str(exc)) from exc
        log.info("%d rows from %s, in %s", made.rows, dict(made.lineage), made.folder)
        return made.to_json()

    @task
    def discover(**context: Any) -> list[dict[str, Any]]:
        from base_platform.pipelines.pipeline_management import engine

        skip_while_open(pipeline)
        params = context["params"]
        # The run's wall clock starts here; commit divides the bytes by it (GB/hour).
        context["ti"].xcom_push(key="started_at", value=datetime.now(UTC).isoformat())
        context["ti"].xcom_push(key="lag", value=measure_lag(pipeline, context))
        source = _source_of(pipeline, context)
        if source is None:
            return []
        shards = engine.discover(pipeline, source, params["target_uri"], params["full_refresh"])
        log.info("%d shard(s) to read: %s", len(shards), [shard.label for shard in shards[:5]])
        return [shard.to_json() for shard in shards]

    @task(inlets=[source_asset(spec)])
    def process_shard(shard: dict[str, Any], **context: Any) -> dict[str, Any]:
        from base_platform.pipelines.data_security.protection import load_key
        from base_platform.pipelines.pipeline_management import engine
        from base_platform.pipelines.run_records import Shard

        result = engine.process_shard(
            pipeline,
            Shard.from_json(shard),
            run_key(context["run_id"]),
            context["params"]["target_uri"],
            load_key(spec.security),
        )
        log.info(
            "%s: %d in, %d stored, %d quarantined in %.1f s %s",
            result.shard.label,
            result.rows_in,
            result.rows_stored,
            result.rows_quarantined,
            result.seconds,
            dict(result.stage_seconds),
        )
        return result.to_json()

    @task
    def pod_arguments(shards: Any, **context: Any) -> list[list[str]]:
        from base_platform.pipelines.pipeline_management.pod import shard_arguments

        target_uri, key = context["params"]["target_uri"], run_key(context["run_id"])
        return [shard_arguments(pipeline, shard, key, target_uri) for shard in shards]

    def shard_pods(common: dict[str, Any], arguments: Any) -> Any:
        """``process_shard`` as one pod per shard (the ``kubernetes`` target; see ``pod``)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

        from base_platform.pipelines.pipeline_management.pod import pod_settings

        pods = KubernetesPodOperator.partial(**common, **pod_settings(pipeline))
        return pods.expand(arguments=arguments).output

    return {
        PipelineStep.DERIVE: _call(derive),
        PipelineStep.DISCOVER: _call(discover),
        PipelineStep.PROCESS_SHARD: lambda common, shards: process_shard.override(**common).expand(
            shard=shards
        ),
        PipelineStep.POD_ARGUMENTS: _call(pod_arguments),
        PipelineStep.SHARD_POD: shard_pods,
    }


def _publishing_makers(pipeline: Pipeline, dag_id: str) -> dict[PipelineStep, Maker]:
    """The steps from commit on: the write-audit-publish of the run's snapshot, and what follows it."""
    spec = pipeline.spec
    target = dataset_asset(spec)

    @task
    def commit(results: Any, **context: Any) -> dict[str, Any]:
        return _commit_run(pipeline, results, context).to_json()

    @task(outlets=[target])
    def audit(staged: Any, **context: Any) -> dict[str, Any]:
        record = RunRecord.from_json(staged)
        assert record.snapshot_id is not None, "commit read its record back from its snapshot"
        checks = audit_run(pipeline, record, context)
        # the snapshot, for publish_<name> and any DAG scheduled on the dataset
        context["outlet_events"][target].extra = snapshot_extra(record.snapshot_id, run=record.run)
        return replace(record, checks=tuple(checks)).to_json()

    @task
    def catalog(record: Any) -> str:
        from base_platform.pipelines.data_storage import tables
        from base_platform.pipelines.metadata_discovery.registry import registry_entry

        table = tables.load(spec.name)
        assert table is not None, "commit made the table"
        entry = registry_entry(pipeline, table, tables.history(table))
        path = artifacts_root() / "catalog" / f"{spec.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(entry, indent=2))
        return str(path)

    @task
    def monitor(audited: Any, **context: Any) -> dict[str, Any]:
        from base_platform.pipelines.data_storage import tables
        from base_platform.pipelines.quality_monitoring.anomalies import assess

        record = RunRecord.from_json(audited)
        history = [r for r in tables.history(tables.load(spec.name)) if r.run != record.run]
        report = assess(record, history)
        markdown = f"# {spec.name}: {report['status']}\n\nanomalies: {report['anomalies'] or 'none'}\n"
        write_report(dag_id, context["run_id"], "monitor", report, markdown)
        log.info("Monitor: %s, anomalies %s", report["status"], report["anomalies"] or "none")
        return report

    return {
        PipelineStep.COMMIT: _call(commit),
        PipelineStep.AUDIT: _call(audit),
        PipelineStep.ACKNOWLEDGE: _call(acknowledge_task(pipeline)),
        PipelineStep.CATALOG: _call(catalog),
        PipelineStep.MONITOR: _call(monitor),
        PipelineStep.SETTLE: _call(settle_task(pipeline, run_key)),
    }

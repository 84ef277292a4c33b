"""The circuit breaker in Airflow: what an opening breaker does, and ``pipeline_control``, the
operator's way to close it.

An open breaker pauses ``pipeline_<name>`` (through Airflow's API, see ``airflow_api``) and
tells the spec's ``circuit_breaker.notify`` webhook why, with the numbers. ``pipeline_control``
publishes the audited snapshot to ``main`` (and announces it, so ``publish_<name>`` follows) or
discards it, then closes the breaker and resumes the schedule. Only an admin, or a role with
``release_batches: true`` in ``config/roles.yaml``, may trigger it, and its task checks who did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from base_platform.artifacts import write_report
from base_platform.dag_defaults import dataset_dag
from base_platform.pipelines.event_coordination.dataset_assets import DATASET_CHANGES, announce_change
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, load_pipelines, pipeline_named

log = logging.getLogger(__name__)


def breaker_opened(pipeline: Pipeline, reason: str, context: Any) -> None:
    """What an opening breaker does in the task that opens it: say why, and tell the notifier.
    The pause comes once the run has failed (:func:`pause_when_open`)."""
    dag_id = f"pipeline_{pipeline.spec.name}"
    log.error("circuit breaker of %s opened: %s", dag_id, reason)
    if conn_id := pipeline.spec.circuit_breaker.notify:
        from base_platform.notify import WebhookNotifier

        text = (
            f"{reason}\n\nThe run's snapshot waits on the `audit` branch; `main` and its consumers are "
            f"unchanged. Publish or discard it with `pipeline_control` (dataset {pipeline.spec.name})."
        )
        title = f"{dag_id}: circuit breaker open"
        WebhookNotifier(http_conn_id=conn_id, title=title, text=text, colour="D13438").notify(context)


def pause_when_open(pipeline: Pipeline) -> Callable[[Any], None]:
    """``pipeline_<name>``'s failure callback: pause the DAG if its breaker is open.

    Not from a task: the scheduler does not finish the runs of a paused DAG, so a run that paused
    itself would stay "running". The DAG processor runs this after the run has failed.
    """

    def pause(context: Any) -> None:
        from base_platform.airflow_api import set_paused
        from base_platform.pipelines.data_storage import tables
        from base_platform.pipelines.pipeline_management import breaker

        table = tables.load(pipeline.spec.name)
        if table is not None and breaker.state(table).state == "open":
            dag_id = f"pipeline_{pipeline.spec.name}"
            paused = set_paused(dag_id, True)
            log.error("circuit breaker of %s open: schedule %s", dag_id, "paused" if paused else "NOT paused")

    return pause


def skip_while_open(pipeline: Pipeline) -> None:
    """``discover``'s first step: a run (scheduled before the pause, or triggered) does nothing
    while the breaker is open."""
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.pipeline_management import breaker

    table = tables.load(pipeline.spec.name)
    if table is not None and (held := breaker.state(table)).state == "open":
        raise AirflowSkipException(
            f"circuit breaker open since {held.since}: {held.reason}. "
            "Publish or discard the audit with pipeline_control"
        )


def audit_run(pipeline: Pipeline, record: RunRecord, context: Any) -> list[str]:
    """The ``audit`` task: publish the staged snapshot, or open the breaker and fail (no event)."""
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.pipeline_management import breaker

    table = tables.load(pipeline.spec.name)
    assert table is not None, "commit made the table"
    assert record.snapshot_id is not None, "commit read its record back from its snapshot"
    verdict = breaker.audit_and_publish(pipeline, table, record.snapshot_id, record.run)
    if not verdict.passed:
        breaker_opened(pipeline, verdict.reason, context)
        raise AirflowFailException(f"circuit breaker open: {verdict.reason}")
    return [check.detail for check in verdict.checks]


def settle_task(pipeline: Pipeline, run_key: Callable[[str], str]) -> Any:
    """The ``settle`` task of ``pipeline_<name>``, its last (``run_key``: the run's key in the table);
    the pipeline's plan gives it the trigger rule ``all_done``."""

    @task
    def settle(**context: Any) -> None:
        settle_run(pipeline, run_key(context["run_id"]), context)

    return settle


def settle_run(pipeline: Pipeline, run: str, context: Any) -> None:
    """``settle``, which always runs: count the run for ``max_consecutive_failures``, then fail
    it if any task failed (so the run's state is decided here, not by this task)."""
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.pipeline_management import breaker

    dag_id, run_id = f"pipeline_{pipeline.spec.name}", context["run_id"]
    states = context["ti"].get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    failed = sorted({task for task, state in states.items() if state in ("failed", "upstream_failed")})
    table = tables.load(pipeline.spec.name)
    if table is not None:
        limit = pipeline.spec.circuit_breaker.max_consecutive_failures
        held, opened = breaker.count_run(table, run, failed, limit)
        if opened:
            breaker_opened(pipeline, held.reason or "", context)
    if failed:
        raise AirflowFailException(f"the run failed at {', '.join(failed)}")


def build_pipeline_control_dag() -> DAG:
    names = [pipeline.spec.name for pipeline in load_pipelines()]
    params = {
        "dataset": Param(type="string", enum=names, description="The pipeline whose breaker is open"),
        "action": Param(
            type="string",
            enum=["publish", "discard"],
            description="publish: the audited snapshot goes to main; discard: it never does",
        ),
        "reason": Param(type="string", minLength=3, description="Why: kept in the breaker's history"),
    }
    with dataset_dag(
        "pipeline_control", params=params, doc_md=__doc__, tags=["pipeline_management", "dataset"]
    ) as dag:

        @task(outlets=[DATASET_CHANGES])
        def resolve(**context: Any) -> dict[str, Any]:
            from base_platform.airflow_api import set_paused
            from base_platform.pipelines.data_storage import tables
            from base_platform.pipelines.pipeline_management import breaker

            params = context["params"]
            if context["dag_run"].clear_number:  # a cleared run keeps its first trigger's user
                raise AirflowFailException(
                    "a cleared pipeline_control run is refused: it would act as the user who first "
                    "triggered it, on whatever batch the breaker holds now; trigger a new run"
                )
            who = require_releaser(context["dag_run"].triggering_user_name)
            pipeline = pipeline_named(params["dataset"])
            table = tables.load(pipeline.spec.name)
            if table is None:
                raise AirflowFailException(f"dataset {pipeline.spec.name!r} has no table: nothing to resolve")
            audited = breaker.audit_position(table)  # read before the decision drops the audit
            try:
                report = breaker.resolve_audit(table, params["action"], who, params["reason"])
            except breaker.BreakerError as exc:
                raise AirflowFailException(str(exc)) from exc
            released = release_stream(pipeline, params["action"], audited, params["reason"])
            if released is not None:
                breaker.move_past(table.refresh(), released)
            if params["action"] == "publish":
                announce_change(context, pipeline.spec, report["snapshot_id"], reason="audit published")
            report["resumed"] = set_paused(f"pipeline_{pipeline.spec.name}", False)
            markdown = f"# {pipeline.spec.name}: audit {params['action']}ed\n\n{report}\n"
            write_report(dag.dag_id, context["run_id"], "resolve", report, markdown)
            return report

        resolve()
    return dag


def require_releaser(username: str | None) -> str:
    """The user who triggered the run, if config/roles.yaml lets them release a held batch (an
    admin, or a role with ``release_batches``); else the task fails. The DAG's trigger grant says
    the same, but a FAB role edited by hand, or a copy of Op or User, would get past that alone."""
    from base_platform.auth.roles import load_roles, may_release_batches

    if not may_release_batches(load_roles(), username):
        raise AirflowFailException(
            f"user {username or '(none)'} may not publish or discard a batch the circuit breaker holds: "
            "only an admin or a role with `release_batches: true` in config/roles.yaml may"
        )
    assert username is not None, "may_release_batches found the user"
    return username


def release_stream(pipeline: Any, action: str, audited: Any, reason: str) -> Any:
    """After the decision, a stream's entries it settles, so the stream goes on: a published
    audit's are acked (up to ``audited``, its position); a discarded batch's are moved to
    ``<stream>:dead-letter`` and acked, every pending one when runs failed with no audit. Returns
    where such a discard leaves the stream, for the source's position (None otherwise). Nothing
    is trimmed here: the pipeline's own acknowledge does that."""
    from base_platform.pipelines.data_streaming.stream_tasks import is_stream

    if not is_stream(pipeline.spec):
        return None
    from base_platform.pipelines.data_ingestion.sources import redis_stream

    if action == "publish":
        redis_stream.acknowledge(pipeline, audited, trim=False)
        return None
    moved, last = redis_stream.dead_letter(pipeline, audited, f"discarded: {reason}")
    log.info("Moved %d pending entries to the dead-letter stream", moved)
    return last if audited is None else None

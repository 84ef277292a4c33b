"""The data_control module's DAGs, for a data owner in the UI or over REST.

- ``dataset_rollback``: a dataset's table back to a snapshot or a point in time;
- ``dataset_maintenance``: nightly snapshot expiry, retention, compaction and orphan clean-up;
- ``dataset_erase``: a data subject's rows out of every dataset, their history and quarantine;
- ``dataset_sample`` and ``dataset_split``: ML tables cut from a dataset by key hash.

Each writes its report beside the run (``write_report``) and returns it as the task's XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.artifacts import write_report
from base_platform.dag_defaults import dataset_dag
from base_platform.pipelines.data_control.form_params import POINT, SIZE, SPLIT_CHOICES
from base_platform.pipelines.event_coordination.dataset_assets import DATASET_CHANGES, announce_change
from base_platform.pipelines.spec import load_pipelines, pipeline_named

if TYPE_CHECKING:
    from base_platform.pipelines.data_control.erasure import Follower

log = logging.getLogger(__name__)
VAULT_REFERENCE = "vault:"
REQUESTS_PATH = "erasure/"  # a request's subject in Vault: its own path under this, read, then destroyed
# the layers above erase their copies of a subject too (``erasure.Follower``): named, not imported,
# for this package may not import them, and they load pyarrow, which parsing a DAG must not
ERASE_FOLLOWERS = (
    "base_platform.pipelines.data_distribution.serving:forget_erased",
    "base_platform.pipelines.feature_engineering.offline:erase_subject",
)


def _names() -> list[str]:
    return [pipeline.spec.name for pipeline in load_pipelines()]


def _dag(dag_id: str, doc: str, params: dict[str, Param], schedule: str | None = None) -> DAG:
    return dataset_dag(dag_id, schedule=schedule, params=params, doc_md=doc, tags=["data_control", "dataset"])


def _dataset_param(description: str) -> Param:
    return Param(type="string", enum=_names(), description=description)


def _refused(exc: Exception) -> AirflowFailException:
    """A request the table cannot satisfy fails at once: retrying cannot help."""
    return AirflowFailException(str(exc))


def build_rollback_dag() -> DAG:
    params = {
        "dataset": _dataset_param("The dataset whose table goes back"),
        "to": Param(
            type="string",
            pattern=POINT.pattern,
            description="A snapshot id, or an ISO timestamp with its zone (the snapshot current then)",
        ),
        "reason": Param(type="string", minLength=3, description="Why: kept in the table and the report"),
        "dry_run": Param(True, type="boolean", description="Only report the runs, files and rows that leave"),
    }
    with _dag("dataset_rollback", "Set a dataset's table back to an earlier snapshot.", params) as dag:

        @task(outlets=[DATASET_CHANGES])
        def roll_back(**context: Any) -> dict[str, Any]:
            from base_platform.pipelines.data_control import table_actions

            params = context["params"]
            who = context["dag_run"].triggering_user_name or "unknown"
            try:
                report = table_actions.rollback(
                    params["dataset"],
                    table_actions.parse_point(params["to"]),
                    dry_run=params["dry_run"],
                    who=who,
                    why=params["reason"],
                )
            except table_actions.ControlError as exc:
                raise _refused(exc) from exc
            verb = "would leave" if report["dry_run"] else "left"
            markdown = (
                f"# {report['dataset']}: snapshot {report['from_snapshot']} -> {report['to_snapshot']}\n\n"
                f"{report['rows_leaving']} rows in {report['files_leaving']} files {verb}; "
                f"by {who}: {params['reason']}\n"
            )
            write_report(dag.dag_id, context["run_id"], "rollback", report, markdown)
            log.info(markdown.replace("\n", " "))
            if not report["dry_run"]:  # consumers follow the table back
                spec = pipeline_named(report["dataset"]).spec
                announce_change(context, spec, report["to_snapshot"], "rollback")
            return report

        roll_back()
    return dag


def build_maintenance_dag() -> DAG:
    params = {
        "orphan_grace_hours": Param(
            72, type="integer", minimum=1, description="Unreferenced files younger than this stay"
        ),
    }
    doc = "Nightly, per dataset: retention, compaction, snapshot expiry and orphan files."
    with _dag("dataset_maintenance", doc, params, schedule="30 2 * * *") as dag:

        @task
        def maintain(name: str, **context: Any) -> dict[str, Any]:
            from base_platform.pipelines.data_control import maintenance

            grace = timedelta(hours=context["params"]["orphan_grace_hours"])
            report = maintenance.maintain(pipeline_named(name), datetime.now(UTC), grace)
            markdown = _maintenance_markdown(report)
            write_report(dag.dag_id, context["run_id"], f"maintenance-{name}", report, markdown)
            log.info(markdown.replace("\n", " "))
            return report

        for name in _names():
            maintain.override(task_id=f"maintain_{name}")(name)
    return dag


def _maintenance_markdown(report: dict[str, Any]) -> str:
    if report.get("table") is None:
        return f"# {report['dataset']}: no table yet\n"
    expiry, compaction = report["expiry"], report["compaction"]
    return (
        f"# {report['table']}\n\n"
        f"- retention: {report['retention']['rows_deleted']} rows before {report['retention']['before']}\n"
        f"- compaction: {compaction['files_before']} files into {compaction['files_after']}\n"
        f"- expiry: {len(expiry['snapshots_expired'])} snapshots, {expiry['files_deleted']} files, "
        f"{expiry['bytes_deleted']} bytes\n"
        f"- orphans: {report['orphans']['orphans_deleted']} files\n"
        f"- now: snapshot {report['snapshot_id']}, {report['snapshots_kept']} snapshots kept\n"
    )


def build_erase_dag(followers: Sequence[str] = ERASE_FOLLOWERS) -> DAG:
    params = {
        "subject": Param(
            type="string",
            minLength=3,
            format="password",  # the trigger form masks it; the task masks it in logs
            description=(
                "The value to erase, as ingested (e.g. an e-mail address), or vault:<kv path>#<key> "
                "naming where it is, so that the run's conf does not hold it"
            ),
        ),
        "datasets": Param(
            _names(),
            type="array",
            items={"type": "string", "enum": _names()},
            minItems=1,
            description="Where to erase it (default: every dataset)",
        ),
    }
    doc = (
        "Erase a data subject (GDPR art. 17): matching rows, quarantined records and every "
        "snapshot that still holds them. The audit names the run, never the subject."
    )
    with _dag("dataset_erase", doc, params) as dag:

        @task(outlets=[DATASET_CHANGES])
        def erase(**context: Any) -> list[dict[str, Any]]:
            from airflow.sdk.log import mask_secret

            from base_platform.pipelines.data_control import erasure, table_actions
            from base_platform.pipelines.data_security import protection

            given = context["params"]["subject"]
            subject = _subject(given)
            mask_secret(subject)
            who = context["dag_run"].triggering_user_name or "unknown"
            after = [follower(path) for path in followers]
            reports = []
            for name in context["params"]["datasets"]:
                pipeline = pipeline_named(name)
                key = protection.load_key(pipeline.spec.security)
                try:
                    request = context["run_id"]
                    reports.append(
                        erasure.erase(pipeline, subject, key, who=who, request=request, followers=after)
                    )
                except table_actions.ControlError as exc:
                    raise _refused(exc) from exc
            lines = [
                f"- {r['dataset']}: {r['rows_removed']} rows, {r.get('quarantine_rows_removed', 0)} "
                f"quarantined, {len(r.get('snapshots_expired', []))} snapshots expired"
                for r in reports
            ]
            markdown = f"# Erasure {context['run_id']} by {who}\n\n" + "\n".join(lines) + "\n"
            write_report(dag.dag_id, context["run_id"], "erasure", reports, markdown)
            log.info(markdown.replace("\n", " "))
            for report in reports:  # the subject leaves the consumers' copies too
                if report["rows_removed"]:
                    spec = pipeline_named(report["dataset"]).spec
                    announce_change(context, spec, report["snapshot_id"], "erasure")
            if given.startswith(VAULT_REFERENCE):  # the request's copy of the subject goes last
                from base_platform.vault.client import destroy_secret

                destroy_secret(_request_path(given)[0])
            return reports

        erase()
    return dag


def follower(path: str) -> Follower:
    """The function a ``module:function`` name of :data:`ERASE_FOLLOWERS` names."""
    import importlib

    module, _, function = path.partition(":")
    return cast("Follower", getattr(importlib.import_module(module), function))


def _subject(given: str) -> str:
    """The subject itself, or read from Vault KV when given as ``vault:<path>#<key>``.

    A trigger's conf stays in Airflow's metadata DB in clear (Airflow 3.3 masks a ``password``
    param only in the form), so CI passes a reference and the value never reaches Airflow's DB.
    """
    if not given.startswith(VAULT_REFERENCE):
        return given
    from base_platform.vault.client import read_secret

    path, key = _request_path(given)
    return read_secret(path, key)


def _request_path(given: str) -> tuple[str, str]:
    """A reference's path and key, refused unless the path is a request's own, under
    ``REQUESTS_PATH``: the task destroys it afterwards, and must never reach another secret."""
    path, _, key = given.removeprefix(VAULT_REFERENCE).partition("#")
    if not key or not path.startswith(REQUESTS_PATH) or len(path) == len(REQUESTS_PATH) or ".." in path:
        raise AirflowFailException(
            f"subject: a Vault reference reads vault:{REQUESTS_PATH}<request>#<key> (a request's own secret)"
        )
    return path, key


def build_sample_dag() -> DAG:
    params = {
        "dataset": _dataset_param("The dataset to sample"),
        "size": Param(
            "10%", type="string", pattern=SIZE.pattern, description="Rows (1000) or a percent (5%)"
        ),
    }
    doc = "A deterministic sample of a dataset by key hash, as the Iceberg table <dataset>__sample."
    return _cut_dag("dataset_sample", "sample", doc, params)


def build_split_dag() -> DAG:
    params = {
        "dataset": _dataset_param("The dataset to split"),
        "split": Param(
            SPLIT_CHOICES[0], type="string", enum=list(SPLIT_CHOICES), description="train/validation/test %"
        ),
    }
    doc = "Train, validation and test tables of a dataset by key hash: a key never changes split."
    return _cut_dag("dataset_split", "split", doc, params)


def _cut_dag(dag_id: str, cut: str, doc: str, params: dict[str, Param]) -> DAG:
    """One task, ``sample`` or ``split``, that cuts ML tables from a dataset (``sampling``);
    its one param besides ``dataset`` is what to cut."""
    (option,) = (name for name in params if name != "dataset")
    with _dag(dag_id, doc, params) as dag:

        @task(task_id=cut)
        def cut_tables(**context: Any) -> dict[str, Any]:
            from base_platform.pipelines.data_control import sampling, table_actions

            make = sampling.sample if cut == "sample" else sampling.split
            given = context["params"]
            try:
                dag_run = f"{dag.dag_id}/{context['run_id']}"
                return make(pipeline_named(given["dataset"]), given[option], dag_run)
            except table_actions.ControlError as exc:
                raise _refused(exc) from exc

        cut_tables()
    return dag

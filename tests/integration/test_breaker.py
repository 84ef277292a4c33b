"""The circuit breaker in pipeline_transactions under dag.test(): a bad batch stops at its audit,
no Asset event leaves, the notifier says why, and pipeline_control publishes or discards it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.pipeline_management import breaker
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.conftest import ROOT
from tests.integration.test_data_control import events_of
from tests.unit.pipelines.test_breaker import main_id
from tests.unit.pipelines.test_engine import generate_run

pytestmark = pytest.mark.integration


@pytest.fixture
def incoming(
    airflow_db: None, start_vault: Any, iceberg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    start_vault()
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "root" / "data/transactions/incoming"


def alerting() -> Pipeline:
    """transactions, its breaker telling the webhook behind ``platform_webhook``."""
    pipeline = pipeline_named("transactions")
    limits = pipeline.spec.circuit_breaker.model_copy(update={"notify": "platform_webhook"})
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"circuit_breaker": limits})})


def run_dag(dag: Any) -> tuple[Any, dict[str, str]]:
    """A dag.test() run, and its tasks' states (a mapped task's by its first instance)."""
    dag_run = dag.test()
    return dag_run, {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances() if ti.map_index < 1}


def run_as(role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/roles.yaml with ``dag_test`` (the user every ``dag.test()`` run is triggered by) as
    a user of ``role``: what pipeline_control's task reads to decide who may release."""
    import yaml

    from base_platform.auth import roles

    config = yaml.safe_load((ROOT / "config" / "roles.yaml").read_text())
    config["users"].append(
        {"username": "dag_test", "role": role, "email": "t@base.example.com", "password_env": "UNUSED"}
    )
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "roles.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(roles, "CONFIG_DIR", tmp_path / "config")


def resolve(action: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    conf = {"dataset": "transactions", "action": action, "reason": "checked the batch with the switch team"}
    return (
        DagBag(dag_folder=str(ROOT / "dags" / "pipeline_control.py"))
        .dags["pipeline_control"]
        .test(run_conf=conf)
    )


def test_a_batch_with_20_percent_bad_rows_trips_the_breaker_and_an_operator_discards_it(
    incoming: Path, webhook: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag

    run_as("admin", tmp_path, monkeypatch)

    dag = build_pipeline_dag(alerting())
    generate_run(500, incoming / "hour-1", 1)
    good, states = run_dag(dag)
    assert good.state == "success" and states["audit"] == states["settle"] == "success", states
    (event,) = events_of(good.run_id)
    main = main_id()
    assert event["snapshot_id"] == str(main)

    summary = generate(1000, "csv", 0.2, incoming / "hour-2", seed=2)
    bad, states = run_dag(dag)
    assert bad.state == "failed" and states["commit"] == "success" and states["audit"] == "failed", states
    assert states["catalog"] == states["monitor"] == "upstream_failed" and states["settle"] == "failed"
    assert events_of(bad.run_id) == []  # nothing downstream runs
    table = table_actions.dataset_table("transactions")
    assert main_id() == main and table.scan().count() == 500
    held = breaker.state(table)
    assert held.state == "open" and held.reason, held
    assert f"({summary.corrupt} of 1000 rows) is above the limit 10.0%" in held.reason
    (message,) = webhook.received
    assert (
        message["title"] == "pipeline_transactions: circuit breaker open" and held.reason in message["text"]
    )

    skipped, states = run_dag(dag)  # a run while it is open does nothing
    assert skipped.state == "success" and states["discover"] == "skipped" and states["settle"] == "success"

    discarded = resolve("discard")
    assert discarded.state == "success" and events_of(discarded.run_id) == []
    table = table.refresh()
    assert breaker.state(table).state == "closed" and breaker.AUDIT not in table.metadata.refs
    after, states = run_dag(dag)  # the discarded batch is not read again
    assert after.state == "success" and states["commit"] == "skipped", states
    assert table.refresh().scan().count() == 500 and len(webhook.received) == 1


def test_an_operator_publishes_the_audit_and_consumers_follow(
    incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag

    run_as("admin", tmp_path, monkeypatch)

    dag = build_pipeline_dag(pipeline_named("transactions"))
    generate(800, "csv", 0.2, incoming, seed=5)
    bad, _ = run_dag(dag)
    assert bad.state == "failed"
    audit = table_actions.dataset_table("transactions").metadata.refs[breaker.AUDIT].snapshot_id
    published = resolve("publish")
    assert published.state == "success"
    (event,) = events_of(published.run_id)  # publish_transactions follows, as after a commit
    assert event == {"snapshot_id": str(audit), "reason": "audit published"}
    table = table_actions.dataset_table("transactions")
    assert main_id() == audit and breaker.state(table).state == "closed"


@pytest.mark.parametrize("role", ["data-scientist", "pipeline-breaker", "developer", None])
def test_a_run_triggered_by_a_user_who_may_not_release_fails_and_the_batch_stays_held(
    incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str | None
) -> None:
    """Whatever FAB let through: a user of a role without ``release_batches``, or one the file
    does not name (None), publishes nothing and the breaker stays open."""
    from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag

    if role:
        run_as(role, tmp_path, monkeypatch)
    dag = build_pipeline_dag(pipeline_named("transactions"))
    generate_run(300, incoming / "hour-1", 1)
    assert run_dag(dag)[0].state == "success"
    main = main_id()
    generate(800, "csv", 0.2, incoming / "hour-2", seed=5)
    assert run_dag(dag)[0].state == "failed"
    table = table_actions.dataset_table("transactions")
    audit = table.metadata.refs[breaker.AUDIT].snapshot_id

    refused = resolve("publish")
    assert refused.state == "failed" and events_of(refused.run_id) == []
    (ti,) = refused.get_task_instances()
    assert ti.state == "failed"
    table = table.refresh()
    assert main_id() == main != audit and breaker.state(table).state == "open"
    assert table.metadata.refs[breaker.AUDIT].snapshot_id == audit


def test_publish_refuses_the_snapshot_the_breaker_holds_and_publishes_mains(
    incoming: Path, tmp_path: Path
) -> None:
    """publish_transactions with the audit's snapshot_id by hand fails at choose and exports
    nothing; with main's it exports."""
    from base_platform.pipelines.data_distribution.dag import build_publish_dag
    from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag
    from base_platform.pipelines.spec import S3Target

    dag = build_pipeline_dag(pipeline_named("transactions"))
    generate_run(300, incoming / "hour-1", 1)
    assert run_dag(dag)[0].state == "success"
    generate(800, "csv", 0.2, incoming / "hour-2", seed=5)
    assert run_dag(dag)[0].state == "failed"
    audit = table_actions.dataset_table("transactions").metadata.refs[breaker.AUDIT].snapshot_id

    exports = tmp_path / "exports"
    pipeline = pipeline_named("transactions")
    spec = pipeline.spec.model_copy(
        update={"distribution": (S3Target(target="s3", name="exports", uri=str(exports)),)}
    )
    publish = build_publish_dag(pipeline.model_copy(update={"spec": spec}))
    refused = publish.test(run_conf={"snapshot_id": str(audit)})
    states = {ti.task_id: ti.state for ti in refused.get_task_instances()}
    assert refused.state == "failed" and states == {"choose": "failed", "publish_exports": "upstream_failed"}
    assert not exports.exists()
    published = publish.test(run_conf={"snapshot_id": str(main_id())})
    assert published.state == "success" and (exports / f"snapshot={main_id()}").is_dir()

"""data_control's DAGs under dag.test() on real tables; bad params refused before a run exists."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_control.form_params import SPLITS
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import pipeline_named
from benchmarks.datagen import generate
from tests.conftest import ROOT
from tests.integration.test_pipelines import run as run_pipeline
from tests.unit.pipelines.test_engine import run

pytestmark = pytest.mark.integration


def control_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "data_control.py")).dags[dag_id]


def events_of(run_id: str) -> list[dict[str, Any]]:
    """The extras of the Asset events a run emitted on ``base.transactions``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(AssetEvent.extra)
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(AssetEvent.source_run_id == run_id, AssetModel.name == "base.transactions")
    )
    with create_session() as session:
        return list(session.scalars(query))


def rollback_dag() -> Any:
    return control_dag("dataset_rollback")


def test_a_rollback_run_sets_the_table_back_and_reports_it(
    airflow_db: None, iceberg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    pipeline = pipeline_named("transactions")
    first: RunRecord | None = None
    for number in (1, 2):
        generate(300, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        record = run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}")
        first = first or record
    assert first is not None
    conf = {
        "dataset": "transactions",
        "to": str(first.snapshot_id),
        "reason": "bad upstream",
        "dry_run": False,
    }
    dag_run = rollback_dag().test(run_conf=conf)
    assert dag_run.state == "success"
    assert table_actions.read_dataset("transactions").num_rows == 300
    report_file = tmp_path / "artifacts" / "dataset_rollback"
    (report,) = [json.loads(p.read_text()) for p in report_file.rglob("rollback.json")]
    assert (report["rows_leaving"], report["why"], report["to_snapshot"]) == (
        300,
        "bad upstream",
        first.snapshot_id,
    )
    # through the alias, an event on the dataset's Asset: publish_transactions follows the table back
    assert events_of(dag_run.run_id) == [{"snapshot_id": str(first.snapshot_id), "reason": "rollback"}]


def test_erase_maintenance_sample_and_split_run_on_a_pipelines_table(
    airflow_db: None, start_vault: Any, iceberg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    start_vault()
    root = tmp_path / "root"
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(root))
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    generate(2000, "csv", 0.0, root / "data/transactions/incoming")
    assert run_pipeline()[0].state == "success"
    with (root / "data/transactions/incoming/transactions-0000.csv").open(errors="replace", newline="") as f:
        rows = csv.DictReader(f)
        subject, by_reference = next(rows)["customer_email"], next(rows)["customer_email"]

    erased = control_dag("dataset_erase").test(run_conf={"subject": subject})
    assert erased.state == "success"
    (report_file,) = (tmp_path / "artifacts" / "dataset_erase").rglob("erasure.json")
    reports = {entry["dataset"]: entry for entry in json.loads(report_file.read_text())}
    assert reports["merchant_daily"] == reports["merchant_daily"] | {"searchable": False, "rows_removed": 0}
    report = reports["transactions"]
    assert report["rows_removed"] >= 1 and report["request"] == erased.run_id
    printed = capfd.readouterr()
    assert erased.run_id in printed.out + printed.err  # the task's log is here ...
    assert subject not in report_file.read_text() + printed.out + printed.err  # ... and the subject is not
    assert table_actions.read_dataset("transactions").num_rows == 2000 - report["rows_removed"]
    current = table_actions.dataset_table("transactions").current_snapshot()
    assert current is not None
    assert events_of(erased.run_id) == [{"snapshot_id": str(current.snapshot_id), "reason": "erasure"}]

    # From CI: the subject in Vault, its reference in the conf, so Airflow's DB never holds it.
    from base_platform.vault.client import vault_hook

    vault_hook().create_or_update_secret("erasure/req-7", {"subject": by_reference})
    referenced = control_dag("dataset_erase").test(run_conf={"subject": "vault:erasure/req-7#subject"})
    assert referenced.state == "success" and by_reference not in json.dumps(referenced.conf)
    import hvac

    kv = vault_hook().vault_client.client.secrets.kv.v2
    with pytest.raises(hvac.exceptions.InvalidPath):  # the request's copy of the subject is destroyed
        kv.read_secret_version(path="erasure/req-7", mount_point="secret")
    refused = control_dag("dataset_erase").test(run_conf={"subject": "vault:platform/pipelines#hmac_key"})
    assert refused.state == "failed"  # never a secret outside erasure/: it would be read, then destroyed
    erasures = [
        entry
        for path in (tmp_path / "artifacts").rglob("erasure.json")
        for entry in json.loads(path.read_text())
        if entry["dataset"] == "transactions"
    ]
    (second,) = [e for e in erasures if e["request"] == referenced.run_id]
    assert second["rows_removed"] >= 1
    removed = report["rows_removed"] + second["rows_removed"]
    assert table_actions.read_dataset("transactions").num_rows == 2000 - removed

    assert control_dag("dataset_maintenance").test().state == "success"
    assert list((tmp_path / "artifacts" / "dataset_maintenance").rglob("maintenance-transactions.json"))
    sampled = control_dag("dataset_sample").test(run_conf={"dataset": "transactions", "size": "100"})
    assert sampled.state == "success"
    assert table_actions.read_dataset("transactions__sample").num_rows == 100
    split = control_dag("dataset_split").test(run_conf={"dataset": "transactions", "split": "70/15/15"})
    assert split.state == "success"
    parts = [table_actions.read_dataset(f"transactions__{part}").num_rows for part in SPLITS]
    assert sum(parts) == 2000 - removed


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        ("dataset_rollback", {"dataset": "payments", "to": "1", "reason": "why not"}),
        ("dataset_rollback", {"dataset": "transactions", "to": "yesterday", "reason": "why not"}),
        ("dataset_rollback", {"dataset": "transactions", "to": "1", "reason": ""}),
        ("dataset_rollback", {"dataset": "transactions", "to": "1", "reason": "ok", "dry_run": "no"}),
        ("dataset_erase", {"subject": "ab"}),
        ("dataset_erase", {"subject": "someone@example.com", "datasets": ["payments"]}),
        ("dataset_erase", {"subject": "someone@example.com", "datasets": []}),
        ("dataset_sample", {"dataset": "transactions", "size": "0"}),
        ("dataset_sample", {"dataset": "transactions", "size": "150%"}),
        ("dataset_split", {"dataset": "transactions", "split": "50/50/10"}),
        ("dataset_maintenance", {"orphan_grace_hours": 0}),
    ],
)
def test_bad_params_are_refused_before_a_run_exists(dag_id: str, conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(control_dag(dag_id).params)
    with pytest.raises(ParamValidationError):
        params.update(conf)
        params.validate()

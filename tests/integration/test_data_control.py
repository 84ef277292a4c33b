"""dataset_rollback under dag.test() on a real table; bad params refused before a run exists."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines import control
from base_platform.pipelines.spec import load_pipelines
from benchmarks.datagen import generate
from tests.conftest import ROOT
from tests.unit.pipelines.test_engine import run

pytestmark = pytest.mark.integration


def rollback_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "data_control.py")).dags["dataset_rollback"]


def test_a_rollback_run_sets_the_table_back_and_reports_it(
    airflow_db: None, iceberg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    pipeline = load_pipelines()[0]
    first: dict[str, Any] = {}
    for number in (1, 2):
        generate(300, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        record = run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}")
        first = first or record
    conf = {
        "dataset": "transactions",
        "to": str(first["snapshot_id"]),
        "reason": "bad upstream",
        "dry_run": False,
    }
    dag_run = rollback_dag().test(run_conf=conf)
    assert dag_run.state == "success"
    assert control.read_dataset("transactions").num_rows == 300
    report_file = tmp_path / "artifacts" / "dataset_rollback"
    (report,) = [json.loads(p.read_text()) for p in report_file.rglob("rollback.json")]
    assert (report["rows_leaving"], report["why"], report["to_snapshot"]) == (
        300,
        "bad upstream",
        first["snapshot_id"],
    )


@pytest.mark.parametrize(
    "conf",
    [
        {"dataset": "payments", "to": "1", "reason": "why not"},
        {"dataset": "transactions", "to": "yesterday", "reason": "why not"},
        {"dataset": "transactions", "to": "1", "reason": ""},
        {"dataset": "transactions", "to": "1", "reason": "ok", "dry_run": "no"},
    ],
)
def test_bad_params_are_refused_before_a_run_exists(conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(rollback_dag().params)
    with pytest.raises(ParamValidationError):
        params.update(conf)
        params.validate()

"""pipeline_transactions under dag.test(): the HMAC key from the Vault simulator, real files."""

from __future__ import annotations

import copy
import csv
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_storage import tables
from benchmarks.datagen import generate
from sandbox.vault.scenario import load_scenario as load_vault_scenario
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
DAG_ID = "pipeline_transactions"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_vault: Any, iceberg: Path) -> Path:
    start_vault()
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "root"


def run(**conf: Any) -> tuple[Any, dict[str, str]]:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "base_pipelines.py")).dags[DAG_ID]
    dag_run = dag.test(run_conf=conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    return dag_run, {t if i < 0 else f"{t}[{i}]": str(s) for (t, i), s in states.items()}


def published(target: Path) -> list[str]:
    return sorted(str(p.relative_to(target)) for p in target.rglob("*.parquet") if "_staging" not in p.parts)


def test_a_run_publishes_partitioned_parquet_quarantines_the_corrupt_rows_and_a_rerun_changes_nothing(
    airflow_db: None, root: Path
) -> None:
    summary = generate(4000, "csv", 0.05, root / "data/transactions/incoming", files=2)
    dag_run, states = run()
    assert dag_run.state == "success", states
    assert states["process_shard[0]"] == states["process_shard[1]"] == "success"
    target = root / "data/transactions/curated"
    current = tables.load("transactions")
    assert current is not None and current.location() == str(target)
    (snapshot,) = current.snapshots()
    manifest = tables.run_record(snapshot)
    assert manifest is not None
    # the tracker: the snapshot names its DAG run, and the catalog entry lists both
    assert manifest.dag_run == f"{DAG_ID}/{dag_run.run_id}"
    assert manifest.rows_in == 4000 == manifest.rows_stored + manifest.rows_quarantined
    assert manifest.rows_quarantined == summary.corrupt and (manifest.gb_per_hour or 0) > 0
    stages = {"ingestion", "contracts", "quality", "security", "storage", "key_check"}  # key_check: commit's
    assert set(manifest.stage_seconds) == stages
    table = current.scan().to_arrow()
    assert table.num_rows == manifest.rows_stored and "event_date" not in table.schema.names
    key = load_vault_scenario("default.yaml").kv["secret/platform/pipelines"]["hmac_key"].encode()
    emails = set(table.column("customer_email").to_pylist())
    with (root / "data/transactions/incoming/transactions-0000.csv").open(
        errors="replace", newline=""
    ) as source:
        sources = [row["customer_email"] for row, _ in zip(csv.DictReader(source), range(50), strict=False)]
    digests = {hmac.new(key, email.encode(), hashlib.sha256).digest() for email in sources}
    assert len(digests & emails) >= 40  # the clean ones among the first 50 rows, stored as their HMAC
    assert not emails & {email.encode() for email in sources}  # no address is stored as it came in
    catalog = json.loads((root.parent / "artifacts/catalog/transactions.json").read_text())
    assert catalog["format"] == "iceberg" and catalog["current_snapshot"] == snapshot.snapshot_id
    assert catalog["history"] == [
        {
            "snapshot_id": snapshot.snapshot_id,
            "committed_at": manifest.committed_at,
            "operation": "append",
            "run": manifest.run,
            "dag_run": manifest.dag_run,
            "rows_stored": manifest.rows_stored,
            "files": manifest.files,
        }
    ]
    before = published(target)

    dag_run, states = run()
    assert dag_run.state == "success" and states["commit"] == "skipped", states
    assert published(target) == before  # the same interval again changes nothing
    assert len(current.refresh().snapshots()) == 1


@pytest.mark.parametrize("conf", [{"source_uri": ""}, {"target_uri": 3}, {"full_refresh": "yes"}])
def test_bad_params_are_refused_before_a_run_exists(conf: dict[str, Any]) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(DagBag(dag_folder=str(ROOT / "dags" / "base_pipelines.py")).dags[DAG_ID].params)
    with pytest.raises(ParamValidationError):
        params.update(conf)  # what the API does with a run's conf, before the run exists
        params.validate()

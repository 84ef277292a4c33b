"""Adopting a dataset in the format before Iceberg (Parquet folders and JSON manifests) into its table."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_storage import legacy_import, tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.conftest import iceberg_connection
from tests.unit.pipelines.test_engine import run


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


@pytest.fixture
def old_dataset(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two runs laid out as the engine before Iceberg did: ``event_date=<day>/part-*.parquet``
    files and ``_manifests/<run>.json`` with each file's SHA-256 and rows. The rows come from
    today's engine in a scratch catalog, so they are what that engine stored."""
    catalog = os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"]
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(scratch / "db", scratch))
    old = tmp_path / "old"
    for number, committed_at in ((1, "2026-10-01T10:00:00+00:00"), (2, "2026-10-02T10:00:00+00:00")):
        generate(400, "csv", 0.02, tmp_path / f"in{number}", seed=number)
        record = run(pipeline, tmp_path / f"in{number}", scratch / "out", f"run-{number}")
        table = tables.load("transactions")
        assert table is not None and record.snapshot_id is not None
        files = []
        added = table.snapshot_by_id(record.snapshot_id)
        for index, task in enumerate(table.scan(snapshot_id=added.snapshot_id).plan_files()):  # type: ignore[union-attr]
            if record.run not in task.file.file_path:
                continue
            rows = pq.read_table(task.file.file_path)
            day = rows.column("event_time")[0].as_py().date().isoformat()
            path = f"event_date={day}/part-run-{number}-{index:05d}.parquet"
            (old / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(task.file.file_path, old / path)
            data = (old / path).read_bytes()
            files.append(
                {
                    "path": path,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "rows": rows.num_rows,
                }
            )
        manifest = {key: record.to_json()[key] for key in legacy_import.MANIFEST_KEYS} | {
            "committed_at": committed_at,
            "contract": pipeline.contract.model_dump(mode="json"),
            "files": files,
            "bytes_stored": sum(f["bytes"] for f in files),
            "shards": [],
        }
        (old / "_manifests").mkdir(exist_ok=True)
        (old / "_manifests" / f"run-{number}.json").write_text(json.dumps(manifest))
    (old / "_manifests" / "_index.json").write_text("{}")
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", catalog)
    return old


def stored_rows(old: Path) -> int:
    return sum(
        file["rows"]
        for path in (old / "_manifests").glob("run-*.json")
        for file in json.loads(path.read_text())["files"]
    )


@pytest.mark.slow
def test_each_old_run_becomes_a_snapshot_and_its_inputs_stay_committed(
    pipeline: Pipeline, old_dataset: Path, tmp_path: Path
) -> None:
    report = legacy_import.adopt(pipeline, str(old_dataset))
    assert [(r["run"], r["adopted"]) for r in report["runs"]] == [("run-1", True), ("run-2", True)]
    table = table_actions.dataset_table("transactions")
    history = tables.history(table)
    assert [h.run for h in history] == ["run-1", "run-2"]
    assert history[0].adopted_committed_at == "2026-10-01T10:00:00+00:00"
    assert (
        table_actions.read_dataset("transactions").num_rows
        == stored_rows(old_dataset)
        == sum(h.rows_stored for h in history)
    )
    for number in (1, 2):  # the runs' inputs are committed: nothing is taken twice
        assert engine.discover(pipeline, str(tmp_path / f"in{number}"), str(old_dataset), False) == []
    # a new run appends to the adopted table as to any other
    generate(300, "csv", 0.0, tmp_path / "in3", seed=3)
    record = run(pipeline, tmp_path / "in3", old_dataset, "run-3")
    assert (
        table_actions.read_dataset("transactions").num_rows == stored_rows(old_dataset) + record.rows_stored
    )


@pytest.mark.slow
def test_adoption_is_safe_to_repeat_and_finishes_a_killed_one(
    pipeline: Pipeline, old_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = legacy_import.old_manifests
    monkeypatch.setattr(
        legacy_import, "old_manifests", lambda target: everything(target)[:1]
    )  # killed after run-1
    legacy_import.adopt(pipeline, str(old_dataset))
    monkeypatch.setattr(legacy_import, "old_manifests", everything)
    report = legacy_import.adopt(pipeline, str(old_dataset))
    assert [(r["run"], r["adopted"]) for r in report["runs"]] == [("run-1", False), ("run-2", True)]
    again = legacy_import.adopt(pipeline, str(old_dataset))
    assert not any(r["adopted"] for r in again["runs"])
    assert len(table_actions.dataset_table("transactions").snapshots()) == 2


@pytest.mark.slow
def test_a_file_that_differs_from_its_manifest_stops_adoption_before_any_commit(
    pipeline: Pipeline, old_dataset: Path
) -> None:
    victim = next(old_dataset.glob("event_date=*/part-run-2-*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(legacy_import.AdoptionFailed, match=f"{victim.name}: SHA-256 differs from run run-2"):
        legacy_import.adopt(pipeline, str(old_dataset), dry_run=True)
    table = tables.load("transactions")
    assert table is None  # a dry run makes nothing


@pytest.mark.slow
def test_the_command_line_says_what_it_would_adopt(
    old_dataset: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert (
        legacy_import.main(["--pipeline", "transactions", "--target-uri", str(old_dataset), "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert "run-1: " in out and "would adopt" in out
    assert legacy_import.main(["--pipeline", "transactions", "--target-uri", str(tmp_path / "nothing")]) == 1
    assert "no _manifests/*.json" in capsys.readouterr().err

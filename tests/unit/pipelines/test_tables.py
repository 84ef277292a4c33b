"""Curated datasets as Iceberg tables: one snapshot per run, read by other engines, never twice."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from base_platform.files import Location
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest
from base_platform.pipelines.spec import Column, Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import KEY, run, via_xcom


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def table(name: str = "transactions") -> Any:
    found = tables.load(name)
    assert found is not None
    return found


@pytest.mark.slow
def test_a_run_is_one_snapshot_that_pyiceberg_and_polars_read_back(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # polars_iceberg is not installed

    generate(3000, "csv", 0.05, tmp_path / "in", files=3)
    record = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    current = table()
    (snapshot,) = current.snapshots()
    assert snapshot.snapshot_id == record.snapshot_id == current.current_snapshot().snapshot_id
    assert current.scan().to_arrow().num_rows == record.rows_stored
    polars = pl.scan_iceberg(current).select(pl.len()).collect().item()
    assert polars == record.rows_stored
    summary = snapshot.summary.additional_properties
    assert summary["base.run"] == "run-1" and summary["added-records"] == str(record.rows_stored)
    assert record.rows_in == 3000 == record.rows_stored + record.rows_quarantined
    assert len(record.inputs) == 3 and all(len(i["sha256"]) == 64 for i in record.inputs)
    assert set(record.stage_seconds) >= {"ingestion", "contracts", "quality", "security", "storage"}
    assert record.null_counts["memo"] > 0  # the generator leaves some memos empty
    # The partition spec is the spec's partition_by; every data file holds one day.
    assert [f.name for f in current.spec().fields] == ["event_time_day"]
    days = {task.file.partition[0] for task in current.scan().plan_files()}
    assert len(days) >= 2


def test_the_same_inputs_again_add_no_snapshot(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(500, "csv", 0.0, tmp_path / "in")
    run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    assert engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False) == []
    assert len(table().snapshots()) == 1


@pytest.mark.parametrize("killed", ["before the snapshot", "after the snapshot"])
@pytest.mark.slow
def test_a_commit_killed_and_retried_adds_its_files_exactly_once(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed: str
) -> None:
    generate(1200, "csv", 0.02, tmp_path / "in", files=3)
    out = str(tmp_path / "out")
    shards = engine.discover(pipeline, str(tmp_path / "in"), out, False)
    results = via_xcom([engine.process_shard(pipeline, s, "r", out, KEY) for s in shards])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError(f"killed {killed}")

    with monkeypatch.context() as patch:
        if killed == "before the snapshot":  # every file renamed to its place, none in the table
            patch.setattr(tables, "commit_files", crash)
        else:  # the snapshot is made; staging is still there
            patch.setattr(Location, "delete_dir", crash)
        with pytest.raises(OSError, match="killed"):
            engine.commit(pipeline, CommitRequest("r", tuple(results), out, {}, key=KEY))
    record = engine.commit(pipeline, CommitRequest("r", tuple(results), out, {}, key=KEY))
    again = engine.commit(pipeline, CommitRequest("r", tuple(results), out, {}, key=KEY))

    current = table()
    assert len(current.snapshots()) == 1 and again == record
    paths = [task.file.file_path for task in current.scan().plan_files()]
    assert len(paths) == len(set(paths)) == record.files
    ids = current.scan(selected_fields=("transaction_id",)).to_arrow().column(0).to_pylist()
    assert len(ids) == len(set(ids)) == record.rows_stored == sum(r.rows_stored for r in results)
    assert not (tmp_path / "out" / "_staging").exists()


def with_new_column(pipeline: Pipeline, source: Path) -> Pipeline:
    """A compatible contract change (1.1.0: an optional ``loyalty_tier``), and 200 rows of it,
    all ``gold``, generated into ``source``."""
    added = pipeline.contract.model_copy(
        update={
            "columns": (*pipeline.contract.columns, Column(name="loyalty_tier", type="string")),
            "version": "1.1.0",
        }
    )
    generate(200, "csv", 0.0, source, seed=8)
    newer = next(source.glob("*.csv"))
    header, *records = csv.reader(io.StringIO(newer.read_text()))
    with newer.open("w", newline="") as out:
        csv.writer(out).writerows([[*header, "loyalty_tier"], *([*r, "gold"] for r in records)])
    return pipeline.model_copy(update={"contract": added})


def test_a_new_optional_column_evolves_the_table_and_old_rows_read_null(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate(300, "csv", 0.0, tmp_path / "in")
    first = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    evolved = with_new_column(pipeline, tmp_path / "more")
    second = run(evolved, tmp_path / "more", tmp_path / "out", "run-2")
    current = table()
    assert "loyalty_tier" in current.schema().column_names
    assert '"version":"1.1.0"' in current.properties[tables.CONTRACT_PROPERTY]
    rows = current.scan().to_arrow()
    assert rows.num_rows == first.rows_stored + second.rows_stored
    tiers = rows.column("loyalty_tier").to_pylist()
    assert tiers.count(None) == first.rows_stored and tiers.count("gold") == second.rows_stored


def test_the_target_must_be_where_the_table_lives(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(100, "csv", 0.0, tmp_path / "in")
    run(pipeline, tmp_path / "in", tmp_path / "out")
    with pytest.raises(tables.TableMismatch, match=r"lives at .*/out, not .*/elsewhere"):
        engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "elsewhere"), False)

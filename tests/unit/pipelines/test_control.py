"""data_control on real tables: time travel with pruning, and rollback with who and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import run


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


@pytest.fixture
def three_runs(pipeline: Pipeline, tmp_path: Path) -> list[RunRecord]:
    records = []
    for number in (1, 2, 3):
        generate(400 * number, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        records.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}"))
    return records


@pytest.mark.slow
def test_read_dataset_travels_in_time_by_snapshot_or_timestamp(three_runs: list[RunRecord]) -> None:
    first, second, _ = three_runs
    assert first.committed_at is not None
    assert table_actions.read_dataset("transactions").num_rows == 400 + 800 + 1200
    assert table_actions.read_dataset("transactions", as_of=first.snapshot_id).num_rows == 400
    table = table_actions.dataset_table("transactions")  # the time it became main's, after its audit
    (published,) = [e for e in table.metadata.snapshot_log if e.snapshot_id == second.snapshot_id]
    at_second = datetime.fromtimestamp(published.timestamp_ms / 1000, UTC)
    assert table_actions.read_dataset("transactions", as_of=at_second).num_rows == 1200
    with pytest.raises(table_actions.ControlError, match="had no snapshot at"):
        table_actions.read_dataset(
            "transactions", as_of=datetime.fromisoformat(first.committed_at) - timedelta(1)
        )
    with pytest.raises(table_actions.ControlError, match="has no snapshot 42"):
        table_actions.read_dataset("transactions", as_of=42)


@pytest.mark.slow
def test_a_filter_on_the_partition_column_prunes_files(three_runs: list[RunRecord]) -> None:
    table = table_actions.dataset_table("transactions")
    every = table_actions.read_dataset("transactions", columns=("transaction_id", "event_time"))
    assert every.column_names == ["transaction_id", "event_time"]
    newest_day = max(every.column("event_time").to_pylist()).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    where = f"event_time >= '{newest_day.isoformat()}'"
    rows = table_actions.read_dataset("transactions", filter=where)
    assert 0 < rows.num_rows < every.num_rows
    assert rows.num_rows == sum(t >= newest_day for t in every.column("event_time").to_pylist())
    planned = list(table.scan(row_filter=where).plan_files())
    assert 0 < len(planned) < len(list(table.scan().plan_files()))  # whole files skipped, by partition


def current_id(table: Any) -> int:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return int(snapshot.snapshot_id)


def test_rollback_dry_run_reports_and_the_real_one_sets_the_table_back(
    pipeline: Pipeline, three_runs: list[RunRecord], tmp_path: Path
) -> None:
    first, second, third = three_runs
    assert first.snapshot_id is not None
    dry = table_actions.rollback(
        "transactions", first.snapshot_id, dry_run=True, who="ops", why="bad upstream"
    )
    assert (dry["rows_leaving"], dry["rows_after"], dry["files_returning"]) == (2000, 400, 0)
    assert dry["files_leaving"] == second.files + third.files
    assert [r["run"] for r in dry["runs_leaving"]] == ["run-3", "run-2"]
    table = table_actions.dataset_table("transactions")
    assert current_id(table) == third.snapshot_id  # a dry run changes nothing

    done = table_actions.rollback(
        "transactions", first.snapshot_id, dry_run=False, who="ops", why="bad upstream"
    )
    assert {k: v for k, v in done.items() if k not in ("dry_run", "at")} == {
        k: v for k, v in dry.items() if k not in ("dry_run", "at")
    }
    table = table.refresh()
    assert current_id(table) == first.snapshot_id
    assert table_actions.read_dataset("transactions").num_rows == 400
    (entry,) = json.loads(table.properties[table_actions.ROLLBACKS_PROPERTY])
    assert (entry["who"], entry["why"], entry["to_snapshot"]) == ("ops", "bad upstream", first.snapshot_id)
    # The runs that left are no longer committed: their inputs are taken again.
    assert engine.discover(pipeline, str(tmp_path / "in2"), str(tmp_path / "out"), False)
    assert set(tables.committed_inputs(table).values()) == {"run-1"}
    # Forward again is not a rollback: run-3's snapshot is no longer an ancestor.
    with pytest.raises(table_actions.ControlError, match="not an ancestor"):
        table_actions.rollback("transactions", third.snapshot_id, dry_run=False, who="ops", why="undo")


def test_a_point_is_a_snapshot_id_or_a_zoned_timestamp() -> None:
    assert table_actions.parse_point("123") == 123
    assert table_actions.parse_point("2026-11-28T10:00:00Z") == datetime.fromisoformat(
        "2026-11-28T10:00:00+00:00"
    )
    with pytest.raises(table_actions.ControlError, match="no time zone"):
        table_actions.parse_point("2026-11-28T10:00:00")
    with pytest.raises(table_actions.ControlError, match="neither a snapshot id"):
        table_actions.parse_point("yesterday")


@pytest.mark.slow
def test_a_rollback_needs_a_reason_and_a_table(three_runs: list[RunRecord]) -> None:
    assert three_runs[0].snapshot_id is not None
    with pytest.raises(table_actions.ControlError, match="needs a reason"):
        table_actions.rollback("transactions", three_runs[0].snapshot_id, dry_run=True, who="ops", why=" ")
    with pytest.raises(table_actions.ControlError, match="no table"):
        table_actions.rollback("payments", 1, dry_run=True, who="ops", why="x")

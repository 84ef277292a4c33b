"""dataset_maintenance on real tables: expiry with its files, retention, compaction and orphans."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_control import maintenance, table_actions
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, Retention, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import run

LATER = datetime(2026, 12, 28, tzinfo=UTC)  # a month after the runs: every old snapshot is past retention


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def with_retention(pipeline: Pipeline, **fields: Any) -> Pipeline:
    spec = pipeline.spec.model_copy(update={"retention": Retention(**fields)})
    return pipeline.model_copy(update={"spec": spec})


@pytest.fixture
def three_runs(pipeline: Pipeline, tmp_path: Path) -> list[RunRecord]:
    records = []
    for number in (1, 2, 3):
        generate(500, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        records.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}"))
    return records


def data_files(root: Path) -> set[str]:
    return {str(p) for p in (root / "data").rglob("*.parquet")}


def rows(table: Any) -> list[tuple[Any, ...]]:
    current = table.scan().to_arrow()
    return sorted(zip(*(current.column(n).to_pylist() for n in current.column_names), strict=True))


@pytest.mark.slow
def test_expiry_keeps_the_rows_deletes_what_only_old_snapshots_reached_and_the_skip_list(
    pipeline: Pipeline, three_runs: list[RunRecord], tmp_path: Path
) -> None:
    table = table_actions.dataset_table("transactions")
    before = rows(table)
    compacted = maintenance.compact(table, pipeline)
    assert compacted["files_before"] > compacted["files_after"] > 0
    replaced = data_files(tmp_path / "out") - maintenance.Reach(table.refresh()).data_files(
        table.current_snapshot()  # type: ignore[arg-type]
    )
    assert replaced  # the small files, still on disk for time travel

    report = maintenance.expire_older_than(table.refresh(), days=7, now=LATER)
    table = table.refresh()
    assert len(report["snapshots_expired"]) == 3 and len(table.snapshots()) == 1
    assert report["files_deleted"] >= len(replaced)
    assert not data_files(tmp_path / "out") & replaced
    assert rows(table) == before
    assert set(tables.committed_inputs(table).values()) == {"run-1", "run-2", "run-3"}
    history = tables.history(table)  # the monitor and the page keep the expired runs' records
    assert [(h.run, h.rows_stored) for h in history] == [(r.run, r.rows_stored) for r in three_runs]
    assert engine.discover(pipeline, str(tmp_path / "in2"), str(tmp_path / "out"), False) == []
    assert maintenance.PENDING_DELETES not in table.properties


@pytest.mark.slow
def test_an_expiry_killed_before_its_deletes_finishes_them_on_the_retry(
    pipeline: Pipeline, three_runs: list[RunRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = table_actions.dataset_table("transactions")
    assert three_runs[0].snapshot_id is not None
    table_actions.rollback("transactions", three_runs[0].snapshot_id, dry_run=False, who="ops", why="test")
    finish = maintenance.finish_deletes

    def killed(table: Any) -> dict[str, int]:
        raise KeyboardInterrupt  # the worker dies after the expiry committed

    monkeypatch.setattr(maintenance, "finish_deletes", killed)
    with pytest.raises(KeyboardInterrupt):
        maintenance.expire_older_than(table.refresh(), days=7, now=LATER)
    monkeypatch.setattr(maintenance, "finish_deletes", finish)
    table = table.refresh()
    pending = json.loads(table.properties[maintenance.PENDING_DELETES])
    assert any(Path(p).exists() for p in pending)  # run-2's and run-3's files, no snapshot reaches them

    report = maintenance.maintain(pipeline, LATER, grace=timedelta(0))
    assert report["files_deleted"] == len(pending) and report["expiry"]["snapshots_expired"] == []
    assert not any(Path(p).exists() for p in pending)
    assert table_actions.read_dataset("transactions").num_rows == 500


@pytest.mark.slow
def test_retention_deletes_whole_days_before_the_cutoff(
    pipeline: Pipeline, three_runs: list[RunRecord]
) -> None:
    kept_days = with_retention(pipeline, data_days=5)
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    times = (
        table_actions.read_dataset("transactions", columns=("event_time",)).column("event_time").to_pylist()
    )
    cutoff = datetime(2026, 11, 23, tzinfo=UTC)
    report = maintenance.delete_old_rows(table_actions.dataset_table("transactions"), kept_days, now)
    assert report == {"rows_deleted": sum(t < cutoff for t in times), "before": cutoff.isoformat()}
    assert 0 < report["rows_deleted"] < len(times)
    left = (
        table_actions.read_dataset("transactions", columns=("event_time",)).column("event_time").to_pylist()
    )
    assert len(left) == len(times) - report["rows_deleted"] and min(left) >= cutoff
    again = maintenance.delete_old_rows(table_actions.dataset_table("transactions"), kept_days, now)
    assert again["rows_deleted"] == 0


def test_orphans_older_than_the_grace_go_and_the_engines_folders_stay(
    pipeline: Pipeline, three_runs: list[RunRecord], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    old, fresh = out / "data" / "stray-old.parquet", out / "metadata" / "stray-new.avro"
    ours = out / "_quarantine" / "run-x" / "0.parquet"
    for path in (old, fresh, ours):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a crashed writer")
    now = datetime.now(UTC)
    week_ago = (now - timedelta(days=7)).timestamp()
    os.utime(old, (week_ago, week_ago))
    os.utime(ours, (week_ago, week_ago))
    report = maintenance.remove_orphans(table_actions.dataset_table("transactions"), now)
    assert report == {
        "orphans_deleted": 1,
        "orphan_bytes_deleted": len(b"left by a crashed writer"),
        "side_files_deleted": 0,
    }
    assert not old.exists() and fresh.exists() and ours.exists()
    assert table_actions.read_dataset("transactions").num_rows == 1500


def test_a_data_retention_needs_a_day_partition(tmp_path: Path) -> None:
    from base_platform.catalog.loader import CatalogError
    from base_platform.pipelines.spec import load_pipeline
    from tests.conftest import ROOT

    spec = (ROOT / "config/pipelines/transactions.yaml").read_text()
    (tmp_path / "pipelines").mkdir()
    bad = tmp_path / "pipelines" / "transactions.yaml"
    bad.write_text(spec.replace('partition_by: ["day(event_time)"]', "partition_by: [currency]"))
    with pytest.raises(CatalogError, match=r"retention\.data_days.*day"):
        load_pipeline(bad, ROOT / "config/contracts")

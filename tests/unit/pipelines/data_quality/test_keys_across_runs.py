"""The primary key holds across the table, not only within a run: a key a later run repeats is
quarantined as ``repeated key`` and counted, whatever made the table's key index."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import quarantined, run

REPEATED = "transaction_id: repeated key (already in the table)"


def resend(source: Path, folder: Path, rows: int, seed: int) -> None:
    """A new drop (``seed``) that also sends ``rows`` lines of an earlier file again."""
    generate(300, "csv", 0.0, folder, seed=seed)
    with next(source.glob("*.csv")).open(newline="") as earlier:
        records = list(csv.reader(earlier))
    with (folder / "resent.csv").open("w", newline="") as again:
        csv.writer(again).writerows(records[: rows + 1])


def ids() -> list[str]:
    table = tables.load("transactions")
    assert table is not None
    column = table.scan(selected_fields=("transaction_id",)).to_arrow()["transaction_id"]
    found: list[str] = column.to_pylist()
    return found


@pytest.mark.slow
def test_a_key_a_later_run_repeats_is_quarantined_and_the_table_holds_it_once(tmp_path: Path) -> None:
    pipeline, out = pipeline_named("transactions"), tmp_path / "out"
    generate(300, "csv", 0.0, tmp_path / "in1", seed=1)
    first = run(pipeline, tmp_path / "in1", out, "run-1")
    resend(tmp_path / "in1", tmp_path / "in2", 27, seed=2)
    second = run(pipeline, tmp_path / "in2", out, "run-2")
    assert (second.rows_in, second.rows_stored, second.rows_quarantined) == (327, 300, 27)
    assert len(ids()) == len(set(ids())) == first.rows_stored + 300
    reasons = Counter(quarantined(out).column("_reason").to_pylist())
    assert reasons[REPEATED] == 27


@pytest.mark.slow
def test_a_snapshot_without_a_key_index_gets_one_from_a_scan(tmp_path: Path) -> None:
    """The index of main's snapshot lost (or a snapshot an erasure made): the keys still hold."""
    pipeline, out = pipeline_named("transactions"), tmp_path / "out"
    generate(300, "csv", 0.0, tmp_path / "in1", seed=1)
    run(pipeline, tmp_path / "in1", out, "run-1")
    shutil.rmtree(out / "_keys")
    resend(tmp_path / "in1", tmp_path / "in2", 5, seed=2)
    assert run(pipeline, tmp_path / "in2", out, "run-2").rows_quarantined == 5
    assert len(ids()) == len(set(ids())) == 600


@pytest.mark.slow
def test_after_a_rollback_the_keys_are_those_of_the_snapshot_rolled_back_to(tmp_path: Path) -> None:
    pipeline, out = pipeline_named("transactions"), tmp_path / "out"
    generate(300, "csv", 0.0, tmp_path / "in1", seed=1)
    first = run(pipeline, tmp_path / "in1", out, "run-1")
    generate(300, "csv", 0.0, tmp_path / "in2", seed=2)
    run(pipeline, tmp_path / "in2", out, "run-2")
    assert first.snapshot_id is not None
    table_actions.rollback("transactions", first.snapshot_id, dry_run=False, who="op", why="bad drop")
    shutil.copytree(tmp_path / "in2", tmp_path / "in3")  # the rolled-back rows, sent again
    for path in (tmp_path / "in3").glob("*.csv"):
        path.rename(path.with_name("again-" + path.name))
    again = run(pipeline, tmp_path / "in3", out, "run-3", full=False)
    assert again.rows_quarantined == 0 and len(set(ids())) == len(ids()) == 600

"""Write-audit-publish: a run's snapshot reaches ``main`` only through its audit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import breaker, engine
from base_platform.pipelines.run_records import CommitRequest
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import generate_run, run


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def main_id() -> int | None:
    current = table_actions.dataset_table("transactions").current_snapshot()
    return current.snapshot_id if current else None


def main_rows() -> int:
    table = table_actions.dataset_table("transactions")
    return table.scan().to_arrow().num_rows if table.current_snapshot() else 0


@pytest.mark.slow
def test_a_batch_with_20_percent_bad_rows_stays_on_the_audit_branch_until_discarded(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate_run(500, tmp_path / "good", 1)
    good = run(pipeline, tmp_path / "good", tmp_path / "out", "run-1")
    assert good.published is True and main_rows() == 500
    summary = generate(1000, "csv", 0.2, tmp_path / "bad", seed=2)
    bad = run(pipeline, tmp_path / "bad", tmp_path / "out", "run-2")
    assert bad.published is False and bad.breaker and "above the limit 10.0%" in bad.breaker
    assert f"({summary.corrupt} of 1000 rows)" in bad.breaker
    table = table_actions.dataset_table("transactions")
    assert main_id() == good.snapshot_id and main_rows() == 500
    assert table.metadata.refs[breaker.AUDIT].snapshot_id == bad.snapshot_id
    assert table.scan().use_ref(breaker.AUDIT).to_arrow().num_rows == 500 + bad.rows_stored
    held = breaker.state(table)
    assert (held.state, held.run, held.audit_snapshot_id) == ("open", "run-2", bad.snapshot_id)
    assert [t["event"] for t in held.transitions] == ["opened"]
    # the run is not the table's: its input is not "committed", nor in the monitor's history
    assert [r.run for r in tables.history(table)] == ["run-1"]
    assert len(engine.discover(pipeline, str(tmp_path / "bad"), str(tmp_path / "out"), False)) == 1

    report = breaker.resolve_audit(table, "discard", who="ops", why="bad export from the switch")
    table = table.refresh()
    assert report["snapshot_id"] == bad.snapshot_id and breaker.AUDIT not in table.metadata.refs
    closed = breaker.state(table)
    assert closed.state == "closed" and [t["event"] for t in closed.transitions] == ["opened", "closed"]
    assert closed.transitions[-1]["why"] == "bad export from the switch" and main_rows() == 500
    # a discarded batch is not read again; a corrected file (a new checksum) is
    assert engine.discover(pipeline, str(tmp_path / "bad"), str(tmp_path / "out"), False) == []
    with pytest.raises(breaker.BreakerError, match="closed and no audit is waiting"):
        breaker.resolve_audit(table, "publish", who="ops", why="again")


def test_an_operator_publishes_an_audit_to_main(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(800, "csv", 0.2, tmp_path / "in", seed=3)
    staged = run(pipeline, tmp_path / "in", tmp_path / "out")  # the first run of a new table
    table = table_actions.dataset_table("transactions")
    assert staged.published is False and table.current_snapshot() is None
    breaker.resolve_audit(table, "publish", who="ops", why="the rows are right: a new merchant's currency")
    table = table.refresh()
    assert main_id() == staged.snapshot_id
    assert main_rows() == staged.rows_stored and breaker.state(table).state == "closed"
    assert breaker.AUDIT not in table.metadata.refs
    assert [r.run for r in tables.history(table)] == ["run-1"]


@pytest.mark.slow
def test_publishing_refuses_an_audit_main_moved_past(pipeline: Pipeline, tmp_path: Path) -> None:
    generate_run(300, tmp_path / "a", 1)
    first = run(pipeline, tmp_path / "a", tmp_path / "out", "run-1")
    generate_run(300, tmp_path / "b", 2)
    run(pipeline, tmp_path / "b", tmp_path / "out", "run-2")
    generate(600, "csv", 0.25, tmp_path / "c", seed=4)
    bad = run(pipeline, tmp_path / "c", tmp_path / "out", "run-3")
    assert bad.published is False and first.snapshot_id is not None
    table_actions.rollback("transactions", first.snapshot_id, dry_run=False, who="ops", why="bad day")
    with pytest.raises(breaker.BreakerError, match=r"main moved .* discard the audit and run again"):
        breaker.resolve_audit(table_actions.dataset_table("transactions"), "publish", who="ops", why="try")
    assert main_rows() == 300


def test_a_retried_commit_is_audited_once_and_publishes_once(pipeline: Pipeline, tmp_path: Path) -> None:
    generate_run(400, tmp_path / "in", 1)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    key = b"unit-test-key"
    results = [engine.process_shard(pipeline, s, "run-1", str(tmp_path / "out"), key) for s in shards]
    interval: dict[str, str | None] = {"start": None, "end": None}
    out = str(tmp_path / "out")
    staged = engine.commit(
        pipeline, CommitRequest("run-1", tuple(results), out, interval, key=key, publish=False)
    )
    table = table_actions.dataset_table("transactions")
    assert table.current_snapshot() is None and table.metadata.refs[breaker.AUDIT].snapshot_id
    assert staged.snapshot_id is not None
    for _ in range(2):
        verdict = breaker.audit_and_publish(pipeline, table, staged.snapshot_id, "run-1")
        assert verdict.passed
    assert [s.snapshot_id for s in tables.lineage(table.refresh())] == [staged.snapshot_id]
    again = engine.commit(
        pipeline, CommitRequest("run-1", tuple(results), str(tmp_path / "out"), interval, key=key)
    )
    assert again.snapshot_id == staged.snapshot_id and again.published is True
    assert breaker.AUDIT not in table.refresh().metadata.refs and main_rows() == 400


@pytest.mark.slow
def test_the_row_band_trips_on_a_run_far_outside_the_history(pipeline: Pipeline, tmp_path: Path) -> None:
    for number in range(1, 7):
        generate_run(200 + number, tmp_path / f"in{number}", number)
        assert run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}").published
    generate_run(2000, tmp_path / "big", 7)
    big = run(pipeline, tmp_path / "big", tmp_path / "out", "run-7")
    assert big.published is False and big.breaker
    assert "2000 rows in, z = " in big.breaker and "against 6 earlier runs" in big.breaker


def test_consecutive_failures_open_the_breaker_at_the_limit(pipeline: Pipeline, tmp_path: Path) -> None:
    generate_run(100, tmp_path / "in", 1)
    run(pipeline, tmp_path / "in", tmp_path / "out")
    table = table_actions.dataset_table("transactions")
    assert breaker.count_run(table, "a", ["process_shard"], 3) == (breaker.state(table), False)
    assert breaker.count_run(table, "a", ["process_shard"], 3)[0].consecutive_failures == 1  # counted once
    assert breaker.count_run(table, "b", [], 3)[0].consecutive_failures == 0  # a success ends the run
    breaker.count_run(table, "c", ["commit"], 3)
    breaker.count_run(table, "d", ["discover"], 3)
    held, opened = breaker.count_run(table, "e", ["commit", "process_shard"], 3)
    assert opened and held.state == "open" and held.consecutive_failures == 3
    assert held.reason == "3 failed runs in a row (limit 3); this one failed at commit, process_shard"
    assert held.audit_snapshot_id is None  # no audit to publish: discarding closes it
    assert breaker.count_run(table, "f", ["commit"], 3) == (held, False)  # open: nothing counts
    with pytest.raises(breaker.BreakerError, match="no audit to publish"):
        breaker.resolve_audit(table, "publish", who="ops", why="fixed the source")
    breaker.resolve_audit(table, "discard", who="ops", why="fixed the source")
    assert breaker.state(table.refresh()).consecutive_failures == 0


def test_the_contract_check_fails_on_nulls_in_required_columns_and_on_rows_the_snapshot_lacks(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    from base_platform.pipelines.pipeline_management.breaker import _contract

    generate_run(200, tmp_path / "in", 1)
    record = run(pipeline, tmp_path / "in", tmp_path / "out")
    table = table_actions.dataset_table("transactions")
    assert record.snapshot_id is not None
    snapshot = table.snapshot_by_id(record.snapshot_id)
    assert snapshot is not None
    assert _contract(pipeline, table, snapshot, record).passed
    broken = replace(record, null_counts={"transaction_id": 3, "memo": 9}, rows_stored=201)
    check = _contract(pipeline, table, snapshot, broken)
    assert not check.passed
    assert check.detail == (
        "contract 1.0.0: required columns ['transaction_id'] hold nulls; "
        "the snapshot added 200 rows, the run stored 201"
    )

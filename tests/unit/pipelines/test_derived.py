"""Derived pipelines: merchant_daily computed by DataFusion from the transactions snapshot it is
given, checked against DuckDB recomputing the same snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_storage.derive_io import DeriveError
from base_platform.pipelines.pipeline_management import derived, engine
from base_platform.pipelines.run_records import CommitRequest, DeriveResult, RunRecord
from base_platform.pipelines.spec import Pipeline, pipeline_named
from tests.unit.pipelines.test_engine import KEY, generate_run, run

INTERVAL: dict[str, str | None] = {"start": None, "end": None}


@pytest.fixture
def daily() -> Pipeline:
    return pipeline_named("merchant_daily")


def duckdb_merchant_daily(snapshot_id: int) -> list[dict[str, Any]]:
    """The same aggregate, by DuckDB, over the data files of that transactions snapshot."""
    import duckdb

    table = tables.load("transactions")
    assert table is not None
    files = [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    rows: Any = db.execute(
        """SELECT CAST(date_trunc('day', event_time) AS DATE) AS day, merchant, currency,
                  CAST(SUM(amount) AS DECIMAL(38, 2)) AS amount, COUNT(*) AS transactions,
                  COUNT(DISTINCT account_id) AS accounts
           FROM read_parquet(?) GROUP BY ALL ORDER BY day, merchant, currency""",
        [files],
    ).to_arrow_table()
    return list(rows.to_pylist())


def commit_derived(daily: Pipeline, made: DeriveResult, out: Path, run_key: str) -> RunRecord:
    """The rest of a derived run, as the DAG does it: discover, the stages, a replacing commit."""
    assert made.folder is not None, "derive found something new"
    shards = engine.discover(daily, made.folder, str(out), False)
    results = [engine.process_shard(daily, shard, run_key, str(out), KEY) for shard in shards]
    return engine.commit(
        daily,
        CommitRequest(run_key, tuple(results), str(out), INTERVAL, True, key=KEY, lineage=made.lineage),
    )


def stored(name: str) -> list[dict[str, Any]]:
    table = tables.load(name)
    assert table is not None
    rows = (
        table.scan()
        .to_arrow()
        .sort_by([("day", "ascending"), ("merchant", "ascending"), ("currency", "ascending")])
    )
    return list(rows.to_pylist())


@pytest.mark.slow
def test_merchant_daily_is_computed_from_exactly_the_named_snapshot_and_matches_duckdb(
    daily: Pipeline, tmp_path: Path
) -> None:
    transactions = pipeline_named("transactions")
    generate_run(3000, tmp_path / "in1", 1)
    first = run(transactions, tmp_path / "in1", tmp_path / "tx", "run-1")
    generate_run(2000, tmp_path / "in2", 2)
    second = run(transactions, tmp_path / "in2", tmp_path / "tx", "run-2")
    assert first.snapshot_id is not None and second.snapshot_id is not None

    made = derived.derive(daily, str(tmp_path / "derived"), {"transactions": first.snapshot_id})
    assert made.lineage == {"transactions": str(first.snapshot_id)}
    record = commit_derived(daily, made, tmp_path / "daily", "d-1")
    assert record.published is True and record.lineage == made.lineage
    assert record.rows_in == record.rows_stored == made.rows > 0 and record.rows_quarantined == 0
    expected = duckdb_merchant_daily(first.snapshot_id)
    assert stored("merchant_daily") == expected
    assert sum(row["transactions"] for row in expected) == first.rows_stored

    # the same snapshot again makes the same bytes: nothing new to commit
    again = derived.derive(daily, str(tmp_path / "derived"), {"transactions": first.snapshot_id})
    assert again.folder is not None and again.folder == made.folder
    assert engine.discover(daily, again.folder, str(tmp_path / "daily"), False) == []

    # no event: the current snapshot; the result replaces the dataset whole
    latest = derived.derive(daily, str(tmp_path / "derived"), {})
    assert latest.lineage == {"transactions": str(second.snapshot_id)}
    commit_derived(daily, latest, tmp_path / "daily", "d-2")
    assert stored("merchant_daily") == duckdb_merchant_daily(second.snapshot_id)
    history = tables.history(tables.load("merchant_daily"))
    assert [(r.lineage or {}).get("transactions") for r in history] == [
        str(first.snapshot_id),
        str(second.snapshot_id),
    ]


def test_a_transform_that_cannot_run_or_does_not_fit_the_contract_is_refused(
    daily: Pipeline, tmp_path: Path
) -> None:
    with pytest.raises(DeriveError, match="input transactions has no table yet"):
        derived.derive(daily, str(tmp_path / "derived"), {})
    generate_run(200, tmp_path / "in", 1)
    first = run(pipeline_named("transactions"), tmp_path / "in", tmp_path / "tx")
    assert first.snapshot_id is not None
    with pytest.raises(DeriveError, match="input transactions has no snapshot 42"):
        derived.derive(daily, str(tmp_path / "derived"), {"transactions": 42})

    def with_sql(sql: str) -> Pipeline:
        return daily.model_copy(update={"spec": daily.spec.model_copy(update={"transform": sql})})

    with pytest.raises(DeriveError, match=r"the transform failed: .*no_such_column"):
        derived.derive(with_sql("SELECT no_such_column FROM transactions"), str(tmp_path / "d"), {})
    wrong = "SELECT merchant, currency, COUNT(*) AS n FROM transactions GROUP BY 1, 2"
    with pytest.raises(DeriveError, match=r"missing \['accounts', 'amount', 'day', 'transactions'\]"):
        derived.derive(with_sql(wrong), str(tmp_path / "d"), {"transactions": first.snapshot_id})

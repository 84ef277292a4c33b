"""``write: merge`` keeps one version of each key, the latest by ``order_by``, across runs,
within a run and across partitions; a replayed file changes nothing; every row read is counted
as stored, quarantined or superseded."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from base_platform.catalog.loader import CatalogError
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import Pipeline, Write, load_pipeline, pipeline_named
from tests.conftest import iceberg_connection
from tests.unit.pipelines.test_engine import KEY, run

NOW = datetime.now(UTC).replace(microsecond=0)
COLUMNS = (
    *("transaction_id", "account_id", "event_time", "amount", "currency", "merchant"),
    *("merchant_country", "channel", "customer_email", "customer_phone", "card_last4", "status", "memo"),
)


def merging() -> Pipeline:
    """transactions, upserted by key with the latest event_time winning (no unique rule on it)."""
    pipeline = pipeline_named("transactions")
    quality = tuple(r for r in pipeline.spec.quality if getattr(r, "columns", None) != ("transaction_id",))
    spec = pipeline.spec.model_copy(
        update={"write": Write(mode="merge", order_by="event_time"), "quality": quality}
    )
    return pipeline.model_copy(update={"spec": spec})


def drop(folder: Path, name: str, rows: list[tuple[str, timedelta, str]]) -> None:
    """A CSV of (transaction_id, age, amount) rows, the rest of each row valid and alike."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w", newline="") as file:
        out = csv.writer(file)
        out.writerow(COLUMNS)
        for key, age, amount in rows:
            when = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.writerow(
                [key, "acc-1", when, amount, "EUR", "shop", "DE", "online", "", "", "", "approved", ""]
            )


def table_rows() -> dict[str, tuple[datetime, str]]:
    table = tables.load("transactions")
    assert table is not None
    rows = table.scan(selected_fields=("transaction_id", "event_time", "amount")).to_arrow().to_pylist()
    keys = [row["transaction_id"] for row in rows]
    assert len(keys) == len(set(keys)), "the primary key is unique in main"
    return {row["transaction_id"]: (row["event_time"], str(row["amount"])) for row in rows}


def counts(record: RunRecord) -> tuple[int, int, int, int | None, int | None]:
    return (
        record.rows_in,
        record.rows_stored,
        record.rows_quarantined,
        record.rows_superseded,
        record.rows_updated,
    )


DAY, HOUR = timedelta(days=1), timedelta(hours=1)


@pytest.mark.slow
def test_the_latest_version_of_each_key_wins_across_runs_and_partitions(tmp_path: Path) -> None:
    pipeline, out = merging(), tmp_path / "out"
    drop(tmp_path / "in1", "a.csv", [("a", 2 * DAY, "1.00"), ("b", 2 * DAY, "2.00"), ("c", 2 * DAY, "3.00")])
    first = run(pipeline, tmp_path / "in1", out, "run-1")
    assert counts(first) == (3, 3, 0, 0, 0)
    drop(
        tmp_path / "in2",
        "b.csv",
        [
            ("a", HOUR, "10.00"),  # newer, another day's partition: replaces a
            ("b", 3 * DAY, "20.00"),  # older than the table's: superseded
            ("c", 2 * DAY, "30.00"),  # a tie with the table's: the table keeps its own
            ("d", 2 * HOUR, "40.00"),  # new, and
            ("d", HOUR, "41.00"),  # newer within the run: this one
            ("not-a-row", HOUR, "x"),  # quarantined, as in an append
            *[(f"new-{n}", HOUR, "1.00") for n in range(10)],
        ],
    )
    second = run(pipeline, tmp_path / "in2", out, "run-2")
    assert second.published, second.breaker
    assert counts(second) == (16, 12, 1, 3, 1)
    assert {key: amount for key, (_, amount) in table_rows().items() if len(key) == 1} == {
        "a": "10.00",
        "b": "2.00",
        "c": "3.00",
        "d": "41.00",
    }
    assert len(table_rows()) == 14


@pytest.mark.slow
def test_a_replayed_drop_and_a_retried_commit_change_nothing(tmp_path: Path) -> None:
    pipeline, out = merging(), tmp_path / "out"
    drop(tmp_path / "in1", "a.csv", [("a", DAY, "1.00"), ("b", DAY, "2.00")])
    run(pipeline, tmp_path / "in1", out, "run-1")
    drop(tmp_path / "in2", "b.csv", [("a", HOUR, "5.00"), ("c", HOUR, "6.00")])
    shards = engine.discover(pipeline, str(tmp_path / "in2"), str(out), False)
    results = tuple(engine.process_shard(pipeline, shard, "run-2", str(out), KEY) for shard in shards)
    request = CommitRequest("run-2", results, str(out), {"start": None, "end": None}, False, key=KEY)
    second = engine.commit(pipeline, request)
    assert counts(second) == (2, 2, 0, 0, 1)
    before = table_rows()
    assert engine.commit(pipeline, request) == second  # a retried commit
    assert table_rows() == before
    header, *lines = (tmp_path / "in2" / "b.csv").read_text().splitlines(keepends=True)
    (tmp_path / "in3").mkdir()  # the same rows again, in another order: another file to discover
    (tmp_path / "in3" / "again.csv").write_text(header + "".join(reversed(lines)))
    replay = run(pipeline, tmp_path / "in3", out, "run-3")
    assert counts(replay) == (2, 0, 0, 2, 0)
    assert table_rows() == before


@pytest.mark.slow
def test_a_key_index_lost_or_a_full_refresh_still_keeps_one_version(tmp_path: Path) -> None:
    pipeline, out = merging(), tmp_path / "out"
    drop(tmp_path / "in1", "a.csv", [("a", DAY, "1.00"), ("a", 2 * DAY, "0.50")])
    assert counts(run(pipeline, tmp_path / "in1", out, "run-1")) == (2, 1, 0, 1, 0)
    for index in (out / "_keys").rglob("*.u64"):
        index.unlink()
    drop(tmp_path / "in2", "b.csv", [("a", HOUR, "2.00")])
    assert counts(run(pipeline, tmp_path / "in2", out, "run-2")) == (1, 1, 0, 0, 1)
    assert table_rows()["a"][1] == "2.00"
    drop(tmp_path / "in3", "c.csv", [("a", DAY, "3.00"), ("e", DAY, "4.00")])
    refreshed = run(pipeline, tmp_path / "in3", out, "run-3", full=True)
    assert counts(refreshed) == (2, 2, 0, 0, 0)
    assert {key: amount for key, (_, amount) in table_rows().items()} == {"a": "3.00", "e": "4.00"}


def test_a_merge_names_a_stored_column_and_no_unique_rule_on_the_key(tmp_path: Path) -> None:
    source = Path("config/pipelines/transactions.yaml").read_text()
    for write, fault in (
        ("write: {mode: merge}\n", "order_by"),
        ("write: {mode: merge, order_by: nowhere}\n", "unknown column"),
        ("write: {mode: merge, order_by: event_time}\n", "no unique rule"),  # the spec has one on the key
        ("write: {mode: append, order_by: event_time}\n", "order_by"),
    ):
        (tmp_path / "pipelines").mkdir(exist_ok=True)
        path = tmp_path / "pipelines" / "transactions.yaml"
        path.write_text(source + write)
        with pytest.raises(CatalogError, match=fault) as failed:
            load_pipeline(path, Path("config/contracts"))
        assert "transactions.yaml" in str(failed.value)


RUN_ROWS = st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 3)), min_size=1, max_size=10)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(RUN_ROWS, st.just("replay")), min_size=1, max_size=4))
def test_main_always_holds_the_latest_version_of_each_key(
    steps: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random runs of a few keys at a few times (ties within a run and with the table), and
    replays of earlier drops: main holds exactly the versions a plain model of the rule picks."""
    home = tmp_path / uuid.uuid4().hex
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(home / "iceberg.db", home / "wh"))
    pipeline, out = merging(), home / "out"
    model: dict[str, tuple[int, str]] = {}  # key -> (age in hours, amount) of the version kept
    drops: list[Path] = []
    for number, step in enumerate(steps):
        folder = home / f"in{number}"
        if step == "replay":
            if not drops:
                continue
            header, *lines = drops[0].read_text().splitlines(keepends=True)
            folder.mkdir(parents=True)
            (folder / "again.csv").write_text(header + "".join(reversed(lines)))
            rows = list(reversed(_rows_of(drops[0])))
        else:
            rows = [(key, age, f"{number * 100 + place}.00") for place, (key, age) in enumerate(step)]
            drop(folder, "drop.csv", [(key, age * HOUR, amount) for key, age, amount in rows])
            drops.append(folder / "drop.csv")
        latest: dict[str, tuple[int, str]] = {}
        for key, age, amount in rows:  # in the run, a tie goes to the later row
            if key not in latest or age <= latest[key][0]:
                latest[key] = (age, amount)
        for key, (age, amount) in latest.items():  # against the table, a tie to the table
            if key not in model or age < model[key][0]:
                model[key] = (age, amount)
        if not engine.discover(pipeline, str(folder), str(out), False):
            continue  # a drop whose bytes were taken before: discover skips it, nothing changes
        record = run(pipeline, folder, out, f"run-{number}")
        assert record.rows_in == record.rows_stored + record.rows_quarantined + (record.rows_superseded or 0)
        assert record.published, record.breaker
        assert {key: amount for key, (_, amount) in table_rows().items()} == {
            key: amount for key, (_, amount) in model.items()
        }


def _rows_of(path: Path) -> list[tuple[str, int, str]]:
    """A drop's (key, age in hours, amount) rows, as :func:`drop` wrote them."""
    found = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            when = datetime.strptime(row["event_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            found.append((row["transaction_id"], round((NOW - when) / HOUR), row["amount"]))
    return found


@pytest.mark.slow
def test_a_commit_that_failed_after_publishing_its_files_merges_the_same_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog refuses the snapshot after the run's files were renamed into place: the retry
    finds them there, and stores each key once with the same counts."""
    from pyiceberg.table import Transaction

    pipeline, out = merging(), tmp_path / "out"
    drop(tmp_path / "in1", "a.csv", [("a", DAY, "1.00"), ("b", DAY, "2.00")])
    run(pipeline, tmp_path / "in1", out, "run-1")
    drop(tmp_path / "in2", "b.csv", [("a", HOUR, "5.00"), ("a", 2 * HOUR, "4.00"), ("c", HOUR, "6.00")])
    shards = engine.discover(pipeline, str(tmp_path / "in2"), str(out), False)
    results = tuple(engine.process_shard(pipeline, shard, "run-2", str(out), KEY) for shard in shards)
    request = CommitRequest("run-2", results, str(out), {"start": None, "end": None}, False, key=KEY)

    def catalog_gone(self: Transaction) -> None:
        raise OSError("catalog gone")

    with monkeypatch.context() as patch:
        patch.setattr(Transaction, "commit_transaction", catalog_gone)
        with pytest.raises(OSError, match="catalog gone"):
            engine.commit(pipeline, request)
    assert not list((out / "_staging" / "run-2").rglob("part-*.parquet")), "the run's files were published"
    record = engine.commit(pipeline, request)
    assert counts(record) == (3, 2, 0, 1, 1)
    assert {key: amount for key, (_, amount) in table_rows().items()} == {
        "a": "5.00",
        "b": "2.00",
        "c": "6.00",
    }


@pytest.mark.slow
def test_a_file_rewritten_by_many_merges_keeps_a_short_name(tmp_path: Path) -> None:
    pipeline, out = merging(), tmp_path / "out"
    drop(tmp_path / "in0", "a.csv", [(f"k{n}", 3 * DAY, "1.00") for n in range(10)])
    run(pipeline, tmp_path / "in0", out, "scheduled__2026-12-07T00:00:00+00:00")
    for number in range(1, 7):  # k0 again and again, a little newer each time, same day
        drop(
            tmp_path / f"in{number}",
            "a.csv",
            [("k0", 3 * DAY - number * timedelta(minutes=1), f"{number}.00")],
        )
        record = run(pipeline, tmp_path / f"in{number}", out, f"scheduled__2026-12-07T0{number}:00:00+00:00")
        assert counts(record) == (1, 1, 0, 0, 1)
    assert table_rows()["k0"][1] == "6.00" and len(table_rows()) == 10
    assert max(len(path.name) for path in out.rglob("*.parquet")) < 120

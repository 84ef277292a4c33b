"""The API's read path on real tables: pushdown that prunes files, cursor pages that add up,
``as_of``, refusals that name the problem, and a cache keyed by snapshot."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_distribution import serving
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import generate_run, run


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    """transactions with two runs: 900 rows over 5 days, then 300 more."""
    pipeline = pipeline_named("transactions")
    generate(900, "csv", 0.0, tmp_path / "in1", files=3, seed=1)
    run(pipeline, tmp_path / "in1", tmp_path / "out", "run-1")
    generate_run(300, tmp_path / "in2", 2)
    run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2")
    return pipeline


@pytest.mark.slow
def test_a_filter_on_the_partition_column_prunes_files_and_a_key_lookup_finds_its_row(
    pipeline: Pipeline,
) -> None:
    everything = table_actions.read_dataset("transactions")
    day = "2026-11-21T00:00:00+00:00"
    one_day = serving.page(
        pipeline,
        serving.Query("transactions", filters=(f"event_time>={day}", "event_time<2026-11-22T00:00:00Z")),
    )
    expected = [
        t for t in everything.column("event_time").to_pylist() if t.isoformat().startswith("2026-11-21")
    ]
    assert one_day.rows.num_rows == len(expected) > 0
    assert one_day.files_planned < one_day.files_total  # the other days' files were never opened
    key = everything.column("transaction_id")[7].as_py()
    found = serving.page(pipeline, serving.Query("transactions", filters=(f"transaction_id={key}",)))
    assert found.rows.column("transaction_id").to_pylist() == [key]
    picked = serving.page(
        pipeline,
        serving.Query(
            "transactions", columns=("transaction_id", "currency"), filters=("currency in EUR, USD",)
        ),
    )
    assert picked.rows.column_names == ["transaction_id", "currency"]
    assert set(picked.rows.column("currency").to_pylist()) <= {"EUR", "USD"}


@pytest.mark.slow
def test_cursor_pages_add_up_to_the_snapshot_they_pin_even_when_a_run_commits_meanwhile(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    query = serving.Query("transactions", columns=("transaction_id",), limit=170)
    first = serving.page(pipeline, query)
    generate_run(50, tmp_path / "in3", 3)
    run(pipeline, tmp_path / "in3", tmp_path / "out", "run-3")
    seen, current = first.rows.column("transaction_id").to_pylist(), first
    while current.next_cursor:
        current = serving.page(pipeline, serving.Query(**{**query.__dict__, "cursor": current.next_cursor}))
        assert current.snapshot_id == first.snapshot_id and current.rows.num_rows <= 170
        seen += current.rows.column("transaction_id").to_pylist()
    assert len(seen) == len(set(seen)) == 1200
    assert serving.page(pipeline, serving.Query("transactions", limit=10_000)).rows.num_rows == 1250
    (oldest,) = [
        s for s in table_actions.dataset_table("transactions").snapshots() if s.parent_snapshot_id is None
    ]
    then = serving.page(pipeline, serving.Query("transactions", as_of=str(oldest.snapshot_id), limit=10_000))
    assert then.rows.num_rows == 900


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (serving.Query("transactions", columns=("nope",)), "columns: nope not in transactions"),
        (serving.Query("transactions", filters=("amount ~ 3",)), "write <column><op><value>"),
        (serving.Query("transactions", filters=("amount>lots",)), "'lots' is not a decimal"),
        (serving.Query("transactions", filters=("event_time>2026-11-21",)), "has no time zone"),
        (serving.Query("transactions", filters=("customer_email=a@b.c",)), "stored as hmac"),
        (serving.Query("transactions", limit=10_001), "limit: 1 to 10000"),
        (serving.Query("transactions", cursor="garbage"), "not one this API gave"),
    ],
)
@pytest.mark.slow
def test_a_bad_query_is_refused_naming_what_is_wrong(
    pipeline: Pipeline, query: serving.Query, message: str
) -> None:
    with pytest.raises(serving.QueryError, match=message):
        serving.page(pipeline, query)


@pytest.mark.slow
def test_a_cursor_belongs_to_its_query(pipeline: Pipeline) -> None:
    first = serving.page(pipeline, serving.Query("transactions", limit=100))
    with pytest.raises(serving.QueryError, match="another query"):
        serving.page(pipeline, serving.Query("transactions", limit=200, cursor=first.next_cursor))


@pytest.mark.slow
def test_the_cache_answers_until_the_snapshot_moves_and_stays_within_its_bytes(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pages = serving.PageCache()
    query = serving.Query("transactions", limit=100)
    first = pages.get(pipeline, query)
    assert pages.get(pipeline, query) is first
    generate_run(10, tmp_path / "in4", 4)
    run(pipeline, tmp_path / "in4", tmp_path / "out", "run-4")
    moved = pages.get(pipeline, query)
    assert moved is not first and moved.snapshot_id != first.snapshot_id
    small = serving.PageCache(serving.MemoryPageStore(max_bytes=moved.rows.nbytes * 3 // 2))
    kept = small.get(pipeline, query)
    assert small.get(pipeline, query) is kept
    small.get(pipeline, serving.Query("transactions", limit=99))  # does not fit beside it
    assert small.get(pipeline, query) is not kept  # evicted, read again


@pytest.mark.slow
def test_a_new_cursor_key_ends_the_cursors_in_flight_but_not_paging_from_the_cache(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = serving.PageCache()
    query = serving.Query("transactions", limit=100)
    monkeypatch.setenv(serving.CURSOR_KEY_ENV, "the key before")
    before = pages.get(pipeline, query).next_cursor
    assert before and pages.get(pipeline, replace(query, cursor=before)).rows.num_rows == 100
    monkeypatch.setenv(serving.CURSOR_KEY_ENV, "the key after")
    with pytest.raises(serving.QueryError, match="another server"):
        pages.get(pipeline, replace(query, cursor=before))
    after = pages.get(pipeline, query).next_cursor  # the first page again: its cursor is the new key's
    assert after and pages.get(pipeline, replace(query, cursor=after)).rows.num_rows == 100


def test_a_stored_nan_or_infinity_reads_as_null_in_json_rows() -> None:
    """JSON has no NaN: a sensor's NaN mean made the rows route a 500."""
    rows = pa.table({"mean": [1.5, math.nan, math.inf, -math.inf, None]})
    assert [row["mean"] for row in serving.to_json_rows(rows)] == [1.5, None, None, None, None]


def test_empty_pages_count_against_the_cache_bound() -> None:
    """Distinct queries that match nothing (``amount in 1``, ``amount in 2``, ...) each cache a
    page of no rows: they must fill the bound like any page, not count as a byte each."""
    import pyarrow as pa

    store = serving.MemoryPageStore(max_bytes=10 * serving.PAGE_OVERHEAD_BYTES)
    empty = serving.Page(pa.table({"amount": pa.array([], pa.int64())}), 1, None, 0, 0, 0)
    for number in range(1000):
        store.put(f"query-{number}", empty)
    assert len(store.page_keys()) == 10

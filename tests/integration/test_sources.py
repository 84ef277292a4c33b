"""Sources beyond files on real parts: a real Postgres read by keyset chunks, and the project's
own paginated API server (``sandbox.records_api``) over HTTP, which rate-limits and fails."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import HttpSource, Pagination, Pipeline, PostgresSource, pipeline_named
from sandbox.records_api import RecordsApi
from tests.conftest import free_port
from tests.integration.test_distribution import consumer, consumer_db
from tests.unit.pipelines.test_engine import KEY, via_xcom

pytestmark = pytest.mark.integration
__all__ = ["consumer", "consumer_db"]  # the module's Postgres, as the distribution tests start it
START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
BAD_EVERY = 97  # every 97th row has a currency the quality rules refuse


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg


def with_source(source: Any) -> Pipeline:
    pipeline = pipeline_named("transactions")
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"source": source})})


@pytest.fixture
def source_db(consumer: Any) -> Iterator[Any]:
    """A cursor on the source database (the distribution tests' Postgres, connection
    ``consumer_db``), with an empty ``source.transactions``."""
    consumer.execute("DROP SCHEMA IF EXISTS source CASCADE")
    consumer.execute("CREATE SCHEMA source")
    consumer.execute(
        "CREATE TABLE source.transactions (transaction_id text PRIMARY KEY, account_id text NOT NULL,"
        " event_time timestamptz NOT NULL, amount numeric(18,2) NOT NULL, currency text NOT NULL,"
        " merchant text NOT NULL, merchant_country text NOT NULL, channel text NOT NULL,"
        " customer_email text, customer_phone text, card_last4 text, status text NOT NULL, memo text)"
    )
    consumer.execute("CREATE INDEX ON source.transactions (event_time)")
    yield consumer


def insert(cursor: Any, first: int, last: int) -> None:
    """Rows ``first`` to ``last``, a second apart; every ``BAD_EVERY``-th has a bad currency."""
    cursor.execute(
        "INSERT INTO source.transactions SELECT 'pg-' || lpad(i::text, 8, '0'), 'acct-' || (i %% 50),"
        " %(start)s::timestamptz + i * interval '1 second', (i %% 1000) / 4.0,"
        " CASE WHEN i %% %(bad)s = 0 THEN 'EURO' ELSE 'EUR' END, 'merchant ' || (i %% 20), 'DE', 'online',"
        " 'user' || i || '@example.com', '+4915100' || lpad(i::text, 6, '0'),"
        " lpad((i %% 10000)::text, 4, '0'),"
        " 'approved', NULL FROM generate_series(%(first)s::int, %(last)s::int) AS i",
        {"start": START, "bad": BAD_EVERY, "first": first, "last": last},
    )


def bad_rows(first: int, last: int) -> int:
    return sum(1 for i in range(first, last + 1) if i % BAD_EVERY == 0)


def run(pipeline: Pipeline, target: Path, run_key: str) -> RunRecord | None:
    """discover → process_shard → commit, as the DAG runs them (results through XCom's JSON)."""
    shards = engine.discover(pipeline, "", str(target), False)
    results = [engine.process_shard(pipeline, shard, run_key, str(target), KEY) for shard in shards]
    if sources.nothing_new(results):
        return None
    return engine.commit(
        pipeline,
        CommitRequest(run_key, tuple(via_xcom(results)), str(target), {"start": None, "end": None}, key=KEY),
    )


def stored_ids(prefix: str) -> list[str]:
    table = tables.load("transactions")
    assert table is not None
    ids = table.scan(selected_fields=("transaction_id",)).to_arrow().column("transaction_id")
    return sorted(i for i in ids.to_pylist() if i.startswith(prefix))


def expected_ids(prefix: str, first: int, last: int) -> list[str]:
    return sorted(f"{prefix}{i:08d}" for i in range(first, last + 1) if i % BAD_EVERY)


POSTGRES = PostgresSource(
    kind="postgres",
    connection="consumer_db",
    table="source.transactions",
    cursor="event_time",
    chunk_rows=1000,
)


def test_postgres_reads_new_rows_only_in_keyset_chunks_typed_by_the_contract(
    source_db: Any, tmp_path: Path
) -> None:
    pipeline, target = with_source(POSTGRES), tmp_path / "out"
    insert(source_db, 1, 2500)
    shards = engine.discover(pipeline, "", str(target), False)
    spans = [shard.span or {} for shard in shards]
    assert len(spans) == 3 and spans[0]["after"] is None  # 2,500 rows in chunks of 1,000
    assert all(later["after"] == earlier["upto"] for earlier, later in itertools.pairwise(spans))
    first = run(pipeline, target, "run-1")
    assert first is not None and first.published
    assert first.rows_in == 2500 and first.rows_quarantined == bad_rows(1, 2500)
    assert first.position == [(START + timedelta(seconds=2500)).isoformat(), "pg-00002500"]  # keyset
    assert stored_ids("pg-") == expected_ids("pg-", 1, 2500)

    insert(source_db, 2501, 3200)
    (shard,) = engine.discover(pipeline, "", str(target), False)
    assert shard.span == {
        "after": first.position,
        "upto": [(START + timedelta(seconds=3200)).isoformat(), "pg-00003200"],
    }
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_in == 700  # only the new rows
    assert stored_ids("pg-") == expected_ids("pg-", 1, 3200)  # each once
    assert run(pipeline, target, "run-3") is None  # nothing new: no shard, no snapshot

    table = tables.load("transactions")
    assert table is not None
    row = table.scan(row_filter="transaction_id == 'pg-00000003'").to_arrow().to_pylist()[0]
    assert (str(row["amount"]), row["event_time"]) == ("0.75", START + timedelta(seconds=3))  # typed back
    assert row["card_last4"] == "**03" and len(row["customer_email"]) == 32  # protected as from files


def test_a_postgres_run_killed_mid_way_is_resumed_by_the_next_without_loss_or_duplicates(
    source_db: Any, tmp_path: Path
) -> None:
    pipeline, target = with_source(POSTGRES), tmp_path / "out"
    insert(source_db, 1, 2500)
    killed = engine.discover(pipeline, "", str(target), False)
    engine.process_shard(pipeline, killed[0], "run-killed", str(target), KEY)  # then the worker died
    insert(source_db, 2501, 2600)  # rows that arrive before the next run
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == 2600
    assert stored_ids("pg-") == expected_ids("pg-", 1, 2600)
    retried = run(pipeline, target, "run-2")  # a retry of the committed run adds nothing
    assert retried is None or retried.snapshot_id == record.snapshot_id
    assert stored_ids("pg-") == expected_ids("pg-", 1, 2600)


def insert_at(cursor: Any, ids: list[str], moment: datetime) -> None:
    """Rows with these ids, all at one ``event_time`` (a tie on the cursor)."""
    for transaction_id in ids:
        cursor.execute(
            "INSERT INTO source.transactions VALUES (%s, 'acct-1', %s, 1.00, 'EUR', 'm', 'DE', 'online',"
            " NULL, NULL, NULL, 'approved', NULL)",
            (transaction_id, moment),
        )


def test_postgres_rows_that_tie_on_the_cursor_are_never_skipped(source_db: Any, tmp_path: Path) -> None:
    """The position is (cursor, key): a row committed later at the same cursor value is read."""
    pipeline, target = with_source(POSTGRES.model_copy(update={"chunk_rows": 2})), tmp_path / "out"
    tie = START + timedelta(hours=1)
    insert_at(source_db, ["pg-tie-1", "pg-tie-2", "pg-tie-3"], tie)
    assert run(pipeline, target, "run-1") is not None
    insert_at(source_db, ["pg-tie-4"], tie)  # same event_time as the last committed row
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_in == 1
    assert stored_ids("pg-tie") == ["pg-tie-1", "pg-tie-2", "pg-tie-3", "pg-tie-4"]


@pytest.mark.parametrize("lookback", [None, "1h"])
def test_a_row_committed_late_behind_the_position_is_read_by_the_lookback_once(
    source_db: Any, consumer_db: str, tmp_path: Path, lookback: str | None
) -> None:
    """A transaction open while a run plans commits a row behind the position: without a
    lookback it is skipped for ever; with one it is read by the next run, and the rows read again
    in the window are dropped by key, neither stored twice nor counted again nor quarantined."""
    import psycopg

    pipeline, target = with_source(POSTGRES.model_copy(update={"lookback": lookback})), tmp_path / "out"
    insert(source_db, 1, 100)
    conn = json.loads(consumer_db)
    login = {"user": conn["login"], "password": conn["password"], "dbname": conn["schema"]}
    with psycopg.connect(host=conn["host"], port=conn["port"], **login) as slow:
        slow.execute(  # its event_time is taken now; it commits after the run below planned and read
            "INSERT INTO source.transactions SELECT 'pg-late', 'acct-1', %s, 1.00, 'EUR', 'm', 'DE',"
            " 'online', NULL, NULL, NULL, 'approved', NULL",
            (START + timedelta(seconds=50, milliseconds=500),),
        )
        assert run(pipeline, target, "run-1") is not None
        slow.commit()
    insert(source_db, 101, 110)
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_quarantined == 0
    if lookback is None:
        assert second.rows_in == 10 and stored_ids("pg-late") == []  # skipped for ever
    else:
        assert second.rows_in == 11 and stored_ids("pg-late") == ["pg-late"]  # read once
    assert stored_ids("pg-0") == expected_ids("pg-", 1, 110)  # each once


@pytest.mark.parametrize("lookback", [None, "1h"])
def test_an_erasure_moves_a_postgres_source_neither_back_nor_again(
    source_db: Any, tmp_path: Path, lookback: str | None
) -> None:
    """The erasure expires the snapshot of the newest run (it reached the subject's file): the
    position survives it, and a lookback does not count the erased row again."""
    from base_platform.pipelines.data_control import erasure

    pipeline, target = with_source(POSTGRES.model_copy(update={"lookback": lookback})), tmp_path / "out"
    insert(source_db, 1, 200)
    assert run(pipeline, target, "run-1") is not None
    report = erasure.erase(pipeline, "user150@example.com", KEY, who="dpo", request="gdpr-9")
    assert report["rows_removed"] == 1 and report["snapshots_expired"]
    assert run(pipeline, target, "run-2") is None  # nothing new: not the whole table again
    insert(source_db, 201, 210)
    third = run(pipeline, target, "run-3")
    assert third is not None and third.rows_in == 10


TOKEN = "api-token-that-must-not-leak"


@pytest.fixture
def records_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordsApi]:
    """The project's records API on 127.0.0.1, in a thread; ``card_api`` is its connection."""
    import uvicorn

    api = RecordsApi(TOKEN, START, rows=0, retry_after=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    connection = {"conn_type": "http", "host": "127.0.0.1", "port": port, "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_CARD_API", json.dumps({**connection, "extra": {"auth": "bearer"}}))
    yield api
    server.should_exit = True
    thread.join()


def http_source(pagination: str, **fields: Any) -> HttpSource:
    param = {"cursor": "cursor", "offset": "offset", "link": "cursor"}[pagination]
    return HttpSource(
        kind="http",
        connection="card_api",
        path="/v1/transactions",
        pagination=Pagination(type=pagination, page_size=100, param=param),
        cursor="event_time",
        cursor_param="updated_since",
        **fields,
    )


@pytest.mark.parametrize("pagination", ["cursor", "offset", "link"])
def test_http_pages_survives_429s_and_5xx_and_then_reads_only_new_records(
    records_api: RecordsApi, tmp_path: Path, pagination: str
) -> None:
    pipeline, target = with_source(http_source(pagination)), tmp_path / "out"
    records_api.rows, records_api.bad_every = 1050, 101
    records_api.throttle_every, records_api.fail_every = 4, 7
    first = run(pipeline, target, "run-1")
    assert first is not None and first.rows_in == 1050
    assert first.rows_quarantined == 1050 // 101  # "lots" is not a decimal
    assert {429, 503} <= set(records_api.answered)  # and each was retried
    assert stored_ids("api-") == sorted(f"api-{i:08d}" for i in range(1, 1051) if i % 101)
    assert first.position == (START + timedelta(seconds=1050)).isoformat()

    records_api.rows += 230
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_in == 230  # only the records after the cursor
    assert stored_ids("api-") == sorted(f"api-{i:08d}" for i in range(1, 1281) if i % 101)
    assert run(pipeline, target, "run-3") is None  # nothing new: no snapshot


def test_an_http_run_killed_mid_way_is_read_again_and_a_refusal_is_not_retried(
    records_api: RecordsApi, tmp_path: Path
) -> None:
    pipeline, target = with_source(http_source("cursor", retries=2)), tmp_path / "out"
    records_api.rows = 500
    (shard,) = engine.discover(pipeline, "", str(target), False)
    pages = sources.read(pipeline, shard)
    next(pages), next(pages)  # two pages read, then the worker died
    del pages
    records_api.rows += 40
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == 540
    assert stored_ids("api-") == [f"api-{i:08d}" for i in range(1, 541)]

    records_api.rows += 10
    records_api.fail_every = 1  # down for good: three attempts, then the shard fails
    (shard,) = engine.discover(pipeline, "", str(target), False)
    with pytest.raises(engine.ShardFailed, match="gave up after 3 attempts"):
        engine.process_shard(pipeline, shard, "run-3", str(target), KEY)
    records_api.fail_every, records_api.token = 0, "rotated"
    records_api.answered.clear()
    with pytest.raises(engine.ShardFailed, match="answered 401") as refused:
        engine.process_shard(pipeline, shard, "run-3", str(target), KEY)
    assert records_api.answered == [401] and TOKEN not in str(refused.value)  # no retry, no secret
    records_api.token = TOKEN
    assert (record := run(pipeline, target, "run-3")) is not None and record.rows_in == 10


@pytest.mark.parametrize("pagination", ["cursor", "link"])
def test_an_api_that_sends_the_same_cursor_or_link_again_is_refused_not_read_forever(
    records_api: RecordsApi, tmp_path: Path, pagination: str
) -> None:
    pipeline, target = with_source(http_source(pagination)), tmp_path / "out"
    records_api.rows, records_api.repeat_pages = 500, True
    (shard,) = engine.discover(pipeline, "", str(target), False)
    with pytest.raises(engine.ShardFailed, match="cursor or link again; refusing to loop"):
        engine.process_shard(pipeline, shard, "run-1", str(target), KEY)
    assert len(records_api.answered) == 2  # the first page, and the one that repeated it


def test_pages_per_run_are_bounded_and_the_next_run_goes_on(records_api: RecordsApi, tmp_path: Path) -> None:
    source = http_source("cursor")
    source = source.model_copy(update={"pagination": source.pagination.model_copy(update={"max_pages": 3})})
    pipeline, target = with_source(source), tmp_path / "out"
    records_api.rows = 750
    first = run(pipeline, target, "run-1")
    assert first is not None and first.rows_in == 300
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_in == 300
    assert stored_ids("api-") == [f"api-{i:08d}" for i in range(1, 601)]


def test_a_link_to_another_origin_never_receives_the_credentials(
    records_api: RecordsApi, tmp_path: Path
) -> None:
    """The next page linked on another port (another origin): not requested at all."""
    import uvicorn

    elsewhere = RecordsApi("other", START, rows=1000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(elsewhere.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        records_api.rows, records_api.link_origin = 500, f"http://127.0.0.1:{port}"
        pipeline, target = with_source(http_source("link")), tmp_path / "out"
        (shard,) = engine.discover(pipeline, "", str(target), False)
        with pytest.raises(engine.ShardFailed, match="credentials are never sent to another origin"):
            engine.process_shard(pipeline, shard, "run-1", str(target), KEY)
        assert elsewhere.requests == 0 and records_api.answered == [200]
    finally:
        server.should_exit = True
        thread.join()

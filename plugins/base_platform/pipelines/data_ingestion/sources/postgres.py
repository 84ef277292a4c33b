"""``kind: postgres``: a table read incrementally by a cursor column, in keyset chunks.

Rows are read in keyset order, (cursor, primary key), and the position is the last row's pair,
so rows that tie on the cursor are never skipped between runs. ``plan`` fixes the run's
high-water mark (the last row in that order now) and cuts the rows after the committed position
into ranges of about ``chunk_rows`` (``(cursor, key) > a AND (cursor, key) <= b``), so rows
written while the run reads are the next run's, and a retried shard reads the same range.

A transaction still open at planning may commit a row behind the position later (its cursor
value was taken before it committed). ``lookback`` re-reads that window each run; the engine
drops the rows the table already holds (by key), so the late ones are stored and nothing twice.
The window must cover the longest transaction; where it cannot, change data capture (Postgres
logical replication) is the right tool, not a cursor.
``read`` streams a range through a server-side cursor of the postgres provider's hook, and
renders each value as text the contract parses back (a time in the column's ``format``), so a
table's rows meet the same contract, quality and security stages as a file's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from base_platform.pipelines.data_ingestion.decoding import RawBatch, raw_schema
from base_platform.pipelines.data_ingestion.sources import Resume, as_position, span_shard
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Column, Pipeline, PostgresSource, duration_seconds

BATCH_ROWS = 50_000  # rows fetched from the server-side cursor at a time: one batch for the checks


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    from psycopg import sql

    source, keyset, ordered = _spec(pipeline), _keyset(pipeline), _ordered(pipeline)
    table = sql.Identifier(*source.table.split("."))
    after, bound = _after(pipeline, resume.position)
    order = sql.SQL(", ").join(sql.SQL("{} DESC").format(c) for c in ordered)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in keyset)
    present = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in keyset)
    with _connect(source) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} AND {} ORDER BY {} LIMIT 1").format(
                names, table, after, present, order
            ),
            bound,
        )
        last = cur.fetchone()
        upto = _position(last) if last is not None else None
        shards = []
        if upto is not None:
            up, up_bound = _upto(pipeline, upto)
            ascending = sql.SQL(", ").join(ordered)
            cur.execute(
                sql.SQL(
                    "SELECT {k} FROM (SELECT {k}, row_number() OVER (ORDER BY {o}) AS n FROM {t}"
                    " WHERE {after} AND {up}) AS numbered WHERE n %% %(every)s = 0 ORDER BY {o}"
                ).format(k=names, o=ascending, t=table, after=after, up=up),
                {**bound, **up_bound, "every": source.chunk_rows},
            )
            cuts = [_position(row) for row in cur.fetchall()]
            bounds = [resume.position, *(c for c in cuts if c != upto), upto]
            shards = [{"after": a, "upto": b} for a, b in itertools.pairwise(bounds)]
    label = f"postgres://{source.connection}/{source.table}"
    if source.lookback and isinstance(resume.position, list):
        since = _earlier(pipeline, resume.position[0], source.lookback)
        shards.insert(0, {"since": since, "upto": resume.position, "lookback": True})
    return [span_shard(index, "postgres", label, span) for index, span in enumerate(shards)]


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    """The shard's rows in keyset order; a ``lookback`` shard's are rows already committed or
    committed late behind the position (``RawBatch.known`` marks them for the engine to drop
    those the table has)."""
    from psycopg import sql

    source, span = _spec(pipeline), shard.span or {}
    columns = pipeline.contract.columns
    if span.get("lookback"):
        after, bound = (
            sql.SQL("{} > %(since)s").format(sql.Identifier(source.cursor)),
            {"since": span["since"]},
        )
    else:
        after, bound = _after(pipeline, span.get("after"))
    up, up_bound = _upto(pipeline, span["upto"])
    query = sql.SQL("SELECT {} FROM {} WHERE {} AND {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
        sql.Identifier(*source.table.split(".")),
        after,
        up,
        sql.SQL(", ").join(_ordered(pipeline)),
    )
    with _connect(source) as conn, conn.cursor(name=f"base_{shard.id}") as cur:  # server-side
        cur.execute(query, {**bound, **up_bound})
        while rows := cur.fetchmany(BATCH_ROWS):
            yield RawBatch(_as_text(rows, columns), known=bool(span.get("lookback")))


def _keyset(pipeline: Pipeline) -> list[str]:
    """The order rows are read in: the cursor, then the primary key, so ties on the cursor are
    read in a fixed order and a position between them is exact."""
    cursor = _spec(pipeline).cursor
    return [cursor, *(k for k in pipeline.contract.primary_key if k != cursor)]


def _position(row: Sequence[Any]) -> list[Any]:
    """A row's keyset values as JSON: times and dates as ISO 8601, a UUID or a decimal as text."""
    return [value if isinstance(value, int | str) else str(as_position(value)) for value in row]


def _ordered(pipeline: Pipeline) -> list[Any]:
    """The keyset's columns as Postgres must order and compare them to agree with the position's
    order here: text in byte order (``COLLATE "C"``, as Python compares it), not the database's."""
    from psycopg import sql

    return [
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c))
        if pipeline.contract.column(c).type == "string"
        else sql.Identifier(c)
        for c in _keyset(pipeline)
    ]


def _after(pipeline: Pipeline, position: Any) -> tuple[Any, dict[str, Any]]:
    """Rows after a position: ``(cursor, key) > (…)`` for a keyset position, ``cursor > …`` for a
    cursor value (a table committed before keysets), everything for None."""
    from psycopg import sql

    if position is None:
        return sql.SQL("TRUE"), {}
    if not isinstance(position, list):
        return sql.SQL("{} > %(after0)s").format(sql.Identifier(_keyset(pipeline)[0])), {"after0": position}
    return _compare(pipeline, ">", "after", position)


def _upto(pipeline: Pipeline, position: list[Any]) -> tuple[Any, dict[str, Any]]:
    return _compare(pipeline, "<=", "upto", position)


def _compare(pipeline: Pipeline, operator: str, name: str, position: list[Any]) -> tuple[Any, dict[str, Any]]:
    from psycopg import sql

    ordered = _ordered(pipeline)
    columns = sql.SQL(", ").join(ordered)
    values = sql.SQL(", ").join(sql.Placeholder(f"{name}{i}") for i in range(len(ordered)))
    condition = sql.SQL("({}) {} ({})").format(columns, sql.SQL(operator), values)
    return condition, {f"{name}{i}": value for i, value in enumerate(position)}


def _earlier(pipeline: Pipeline, value: Any, lookback: str) -> Any:
    """The cursor value ``lookback`` before ``value``: a duration for times, a count for integers."""
    column = pipeline.contract.column(_spec(pipeline).cursor)
    if column.type == "int64":
        return int(value) - int(lookback)
    seconds = duration_seconds(lookback)
    if column.type == "date":
        return (date.fromisoformat(value) - timedelta(seconds=seconds)).isoformat()
    return (datetime.fromisoformat(value) - timedelta(seconds=seconds)).isoformat()


def _spec(pipeline: Pipeline) -> PostgresSource:
    source = pipeline.spec.source
    assert isinstance(source, PostgresSource), f"{pipeline.spec.name} reads {source.kind}, not postgres"
    return source


def _connect(source: PostgresSource) -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=source.connection).get_conn()  # psycopg 3


def _as_text(rows: Sequence[tuple[Any, ...]], columns: Sequence[Column]) -> pa.RecordBatch:
    """Rows as the raw binary columns ingestion makes of a file, typed on the way by the contract."""
    by_column = zip(*rows, strict=True)
    arrays = [_text(list(values), column) for values, column in zip(by_column, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=raw_schema([c.name for c in columns]))


def _text(values: list[Any], column: Column) -> pa.Array:
    """One column: the database's typed values as the contract parses them. A value the column's
    type cannot hold is rendered with ``str``, so the contract quarantines it with its reason."""
    try:
        typed = pa.array(values, conformance.arrow_type(column))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return pa.array([None if v is None else str(v) for v in values], pa.string()).cast(pa.binary())
    return conformance.render_text(typed, column).cast(pa.binary())

"""``kind: postgres``: a table read incrementally by a cursor column, in keyset chunks.

``plan`` fixes the run's high-water mark (the cursor's maximum now) and cuts the rows after the
last committed position into ranges of about ``chunk_rows`` (``cursor > a AND cursor <= b``), so
rows written while the run reads are the next run's, and a retried shard reads the same range.
``read`` streams a range through a server-side cursor of the postgres provider's hook, and
renders each value as text the contract parses back (a time in the column's ``format``), so a
table's rows meet the same contract, quality and security stages as a file's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from base_platform.pipelines.data_ingestion.decoding import RawBatch, raw_schema
from base_platform.pipelines.data_ingestion.sources import Resume, as_position, span_shard
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Column, Pipeline, PostgresSource

BATCH_ROWS = 50_000  # rows fetched from the server-side cursor at a time: one batch for the checks


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    from psycopg import sql

    source = _spec(pipeline)
    table, cursor = sql.Identifier(*source.table.split(".")), sql.Identifier(source.cursor)
    after = sql.SQL("{} > %(after)s").format(cursor) if resume.position is not None else sql.SQL("TRUE")
    bound = {"after": resume.position}
    with _connect(source) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT max({}) FROM {} WHERE {}").format(cursor, table, after), bound)
        (upto,) = cur.fetchone()
        if upto is None:
            return []
        cur.execute(
            sql.SQL(
                "SELECT DISTINCT {c} FROM (SELECT {c}, row_number() OVER (ORDER BY {c}) AS n FROM {t}"
                " WHERE {after} AND {c} <= %(upto)s) AS numbered WHERE n %% %(every)s = 0 ORDER BY {c}"
            ).format(c=cursor, t=table, after=after),
            {**bound, "upto": upto, "every": source.chunk_rows},
        )
        cuts = [as_position(row[0]) for row in cur.fetchall()]
    bounds = [resume.position, *(c for c in cuts if c != as_position(upto)), as_position(upto)]
    label = f"postgres://{source.connection}/{source.table}"
    return [
        span_shard(index, "postgres", label, {"after": a, "upto": b})
        for index, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    from psycopg import sql

    source, span = _spec(pipeline), shard.span or {}
    columns = pipeline.contract.columns
    cursor = sql.Identifier(source.cursor)
    after = sql.SQL("{} > %(after)s").format(cursor) if span.get("after") is not None else sql.SQL("TRUE")
    query = sql.SQL("SELECT {} FROM {} WHERE {} AND {} <= %(upto)s ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
        sql.Identifier(*source.table.split(".")),
        after,
        cursor,
        cursor,
    )
    with _connect(source) as conn, conn.cursor(name=f"base_{shard.id}") as cur:  # server-side
        cur.execute(query, dict(span))
        while rows := cur.fetchmany(BATCH_ROWS):
            yield RawBatch(_as_text(rows, columns))


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

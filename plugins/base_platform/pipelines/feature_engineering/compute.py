"""The features of a view as DuckDB SQL: at every source row, at points of anyone's choosing, or latest.

One timeline per entity: the source's rows (their categories looked up) and, for point-in-time
retrieval, the asked points, ordered by event time. A feature is a window function over
``(t - window, t]`` of that timeline (``RANGE`` frames: a row at exactly ``t`` counts, one at
``t - window`` does not), so a point sees only what happened at or before it; a label is one over
``(t, t + window]``, null until ``t + window`` has passed the watermark (the source's newest event
time). The latest values (the online store's) are the same aggregates at the watermark, as one
grouped query; the tests check both forms against a plain-Python oracle. ``count`` counts the
rows whose column is not null.

DuckDB, not DataFusion, the engine elsewhere: on 11.6 M rows and 14 window aggregates (sum,
count and mean over four windows, a distinct count, a label), DuckDB 2.0 took 44 s and
DataFusion 55 took 119 s on 2 cores (measured 2026-11-29); DataFusion's ``RANGE`` frames cost
about 0.6 µs a row per aggregate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.feature_engineering.views import Aggregation, FeatureView, Function
from base_platform.pipelines.spec import duration_seconds

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

POINT_COLUMN = "_point"  # the asked point's row number, null for the source's rows


def connect() -> duckdb.DuckDBPyConnection:
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def quoted(name: str) -> str:
    return f'"{name}"'


def literal(value: str | datetime) -> str:
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + value.replace("'", "''") + "'"


def condition(where: dict[str, tuple[str, ...]]) -> str:
    """``where`` as SQL: every column's value among those listed."""
    parts = [
        f"{quoted(column)} IN ({', '.join(literal(v) for v in values)})" for column, values in where.items()
    ]
    return " AND ".join(parts) or "TRUE"


def source_columns(view: FeatureView, keys: tuple[str, ...] = ()) -> list[str]:
    """The source columns the view reads (the others are never scanned)."""
    wanted = [view.entity, view.source.timestamp, *keys]
    wanted += [category.column for category in view.categories]
    for aggregation in view.aggregations:
        wanted += [aggregation.column, *aggregation.where]
    for label in view.labels:
        wanted += list(label.where)
    added = {category.name for category in view.categories}
    return [name for name in dict.fromkeys(wanted) if name not in added]


def enriched(view: FeatureView) -> str:
    """``events`` with each category looked up in its reference table (``reference_<i>``)."""
    joins = "".join(
        f" LEFT JOIN reference_{i} ON e.{quoted(c.column)} = reference_{i}.{quoted(c.key)}"
        for i, c in enumerate(view.categories)
    )
    added = "".join(
        f", reference_{i}.{quoted(c.value)} AS {quoted(c.name)}" for i, c in enumerate(view.categories)
    )
    return f"SELECT e.*{added} FROM events e{joins}"


def _kept(aggregation: Aggregation) -> str:
    """The aggregated column where the row counts, else null."""
    column = quoted(aggregation.column)
    if not aggregation.where:
        return column
    return f"CASE WHEN {condition(aggregation.where)} THEN {column} END"


def _aggregate(function: Function, value: str, over: str) -> str:
    return {
        "sum": f"COALESCE(SUM({value}){over}, 0)",
        "count": f"COUNT({value}){over}",
        "mean": f"AVG({value}){over}",
        "distinct_count": f"COUNT(DISTINCT {value}){over}",
    }[function]


def _trailing(view: FeatureView, window: str) -> str:
    micros = duration_seconds(window) * 1_000_000 - 1  # (t - window, t]
    return (
        f"(PARTITION BY {quoted(view.entity)} ORDER BY {quoted(view.source.timestamp)} "
        f"RANGE BETWEEN INTERVAL '{micros} microseconds' PRECEDING AND CURRENT ROW)"
    )


def _window_columns(view: FeatureView, watermark: datetime) -> list[str]:
    time = quoted(view.source.timestamp)
    columns = [
        f"{_aggregate(function, _kept(aggregation), ' OVER ' + _trailing(view, window))} AS {quoted(name)}"
        for aggregation in view.aggregations
        for name, function, window in aggregation.features()
    ]
    for label in view.labels:
        ahead = (
            f"(PARTITION BY {quoted(view.entity)} ORDER BY {time} RANGE BETWEEN INTERVAL '1 microsecond' "
            f"FOLLOWING AND INTERVAL '{duration_seconds(label.window)} seconds' FOLLOWING)"
        )
        closed = f"{time} + INTERVAL '{duration_seconds(label.window)} seconds' <= {literal(watermark)}"
        happened = f"COALESCE(BOOL_OR({condition(label.where)}) OVER {ahead}, FALSE)"
        columns.append(f"CASE WHEN {closed} THEN {happened} END AS {quoted(label.name)}")
    return columns


def at_rows(
    view: FeatureView,
    connection: duckdb.DuckDBPyConnection,
    keys: tuple[str, ...],
    watermark: datetime,
    since: datetime | None,
) -> pa.Table:
    """The features (and labels) at every row of ``events`` from ``since`` on, with its key columns;
    ``events`` must hold what those rows look back to (``since - lookback``) and everything after."""
    kept = [quoted(c) for c in (view.entity, view.source.timestamp, *keys)]
    since_clause = f"WHERE {quoted(view.source.timestamp)} >= {literal(since)}" if since else ""
    query = (
        f"WITH timeline AS ({enriched(view)}), "
        f"computed AS (SELECT {', '.join([*kept, *_window_columns(view, watermark)])} FROM timeline) "
        f"SELECT * FROM computed {since_clause} ORDER BY {', '.join(kept)}"
    )
    return connection.sql(query).to_arrow_table()


def at_points(
    view: FeatureView, connection: duckdb.DuckDBPyConnection, columns: list[str], watermark: datetime
) -> pa.Table:
    """The features and labels at each row of ``points`` (entity, timestamp, ``_point``), in its order."""
    columns = [*columns, *(category.name for category in view.categories)]
    source = ", ".join(quoted(c) for c in columns)
    nulls = ", ".join(
        quoted(c) if c in (view.entity, view.source.timestamp) else f"NULL AS {quoted(c)}" for c in columns
    )
    query = (
        f"WITH timeline AS (SELECT {source}, NULL::BIGINT AS {POINT_COLUMN} FROM ({enriched(view)}) "
        f"UNION ALL BY NAME SELECT {nulls}, {POINT_COLUMN} FROM points), "
        f"computed AS (SELECT {POINT_COLUMN}, {', '.join(_window_columns(view, watermark))} FROM timeline) "
        f"SELECT * FROM computed WHERE {POINT_COLUMN} IS NOT NULL ORDER BY {POINT_COLUMN}"
    )
    return connection.sql(query).to_arrow_table()


def latest(view: FeatureView, connection: duckdb.DuckDBPyConnection, watermark: datetime) -> pa.Table:
    """Each entity's features at the watermark, for every entity with a row within the longest window."""
    time = quoted(view.source.timestamp)
    columns = []
    for aggregation in view.aggregations:
        for name, function, window in aggregation.features():
            since = f"{time} > {literal(watermark)} - INTERVAL '{duration_seconds(window)} seconds'"
            columns.append(
                f"{_aggregate(function, _kept(aggregation), f' FILTER (WHERE {since})')} AS {quoted(name)}"
            )
    start = f"{literal(watermark)} - INTERVAL '{view.lookback_seconds} seconds'"
    query = (
        f"WITH timeline AS ({enriched(view)}) "
        f"SELECT {quoted(view.entity)}, {', '.join(columns)} FROM timeline "
        f"WHERE {time} > {start} AND {time} <= {literal(watermark)} "
        f"GROUP BY {quoted(view.entity)} ORDER BY {quoted(view.entity)}"
    )
    return connection.sql(query).to_arrow_table()


def register_events(
    view: FeatureView, connection: duckdb.DuckDBPyConnection, data: Any, keys: tuple[str, ...]
) -> None:
    """``events``: the columns the view reads of ``data`` (the source snapshot, scanned lazily)."""
    register(connection, "source_rows", data)
    limit_events(view, connection, keys, None)


def limit_events(
    view: FeatureView, connection: duckdb.DuckDBPyConnection, keys: tuple[str, ...], reach: datetime | None
) -> None:
    """``events`` from event time ``reach`` on (the filter goes down to the scan)."""
    columns = ", ".join(quoted(c) for c in source_columns(view, keys))
    since = f" WHERE {quoted(view.source.timestamp)} >= {literal(reach)}" if reach else ""
    connection.execute(f"CREATE OR REPLACE VIEW events AS SELECT {columns} FROM source_rows{since}")


def watermark(view: FeatureView, connection: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest event time of ``events``."""
    (found,) = connection.sql(f"SELECT MAX({quoted(view.source.timestamp)}) FROM events").fetchall()
    return found[0].astimezone(UTC) if found[0] is not None else None


def register(connection: duckdb.DuckDBPyConnection, name: str, data: Any) -> None:
    """A pyarrow table or dataset as a DuckDB view (a dataset is scanned lazily, its filters pushed down)."""
    connection.register(name, data)

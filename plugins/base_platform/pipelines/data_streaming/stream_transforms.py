"""Stream operators: ``route``, ``join`` and ``window`` over what a dataset appended since the last run.

A spec with ``inputs: [<stream dataset>]`` and operators instead of a ``transform`` is a derived
pipeline that runs incrementally: each run reads only the input's files that the input snapshot
in the dataset's last lineage lacks (Iceberg's file lists, as ``snapshot_diff.change`` computes
them), and appends. When the input lost files since (a compaction, a rollback, a retention
purge), the run recomputes from the whole snapshot and replaces the dataset instead.

- ``route``: the events whose ``field`` is ``value``, with the contract's columns;
- ``join``: each event enriched from a reference dataset at its current snapshot (as of the
  batch; it is in the run's lineage), a left join, so an unmatched event reaches the contract,
  which quarantines it if the column is required;
- ``window``: per ``key``, tumbling or hopping event-time windows, written once each when the
  watermark (the input's newest event time less ``allowed_lateness_minutes``) has passed their
  end; the position (``base.position``) is the end of the last windows written. An event that
  arrives after all of its windows were written is quarantined as ``late``, and one stamped
  further ahead of now than ``future_tolerance_minutes`` as ``in the future`` (a refused row of the
  result: ``decoding`` makes it a reject with its reason), never dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.data_ingestion.decoding import RAW, REJECT
from base_platform.pipelines.data_storage import derive_io, tables
from base_platform.pipelines.run_records import DeriveResult, RunRecord
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Pipeline, Window

if TYPE_CHECKING:
    import datafusion
    import pyarrow as pa

EPOCH = "TIMESTAMP '1970-01-01T00:00:00Z'"


def derive_appended(pipeline: Pipeline, source_uri: str, triggered: dict[str, int]) -> DeriveResult:
    """``derived.derive`` for operators: the rows the input appended since the last run, routed, joined
    or windowed, written as the run's one input file; what discover and commit need."""
    from base_platform.pipelines.data_storage.snapshot_diff import change

    spec = pipeline.spec
    snapshots = derive_io.snapshots_to_read(pipeline, triggered)
    (name,) = spec.inputs
    table = tables.load(name)
    assert table is not None, "snapshots_to_read found it"
    last = _last_run(spec.name)
    since = (last.lineage or {}).get(name) if last else None
    if since is not None and int(since) == snapshots[name]:
        return DeriveResult(folder=None, lineage={}, rows=0, replace=False)
    delta = change(table, snapshots[name], int(since) if since is not None else None)
    context = datafusion_context()
    files = [task.file.file_path for task in delta.tasks]
    context.register_dataset("appended", derive_io.files_dataset(table, snapshots[name], files))
    if spec.join:
        reference = tables.load(spec.join.dataset)
        if reference is None:
            raise derive_io.DeriveError(f"{spec.name}: the reference {spec.join.dataset} has no table yet")
        snapshots[spec.join.dataset] = tables.existing_snapshot(reference, None)
        context.register_dataset(
            "reference", derive_io.snapshot_dataset(reference, snapshots[spec.join.dataset])
        )
    position = None if delta.whole or last is None else last.position
    if spec.window:
        every = derive_io.snapshot_dataset(table, snapshots[name])
        context.register_dataset("events", every)
        result, position = _windows(pipeline, spec.window, context, position, late=not delta.whole)
    else:
        result = _run(context, _select(pipeline), spec.name)
    result = _as_contract_text(pipeline, result)
    return DeriveResult(
        folder=derive_io.write_result(result, source_uri, snapshots) if result.num_rows else None,
        lineage={dataset: str(snapshot_id) for dataset, snapshot_id in snapshots.items()},
        rows=result.num_rows,
        replace=delta.whole,
        position=position,
    )


REFUSED_FUTURE = f"{tables.PREFIX}refused-future"
REFUSED_KEPT = 10_000  # the newest refused keys kept: a bad clock's burst, not a history


def datafusion_context() -> datafusion.SessionContext:
    import datafusion

    return datafusion.SessionContext()


def _last_run(name: str) -> RunRecord | None:
    """The record of the dataset's newest run on ``main``; None before its first."""
    table = tables.load(name)
    for snapshot in tables.lineage(table) if table is not None else ():
        record = tables.run_record(snapshot)
        if record is not None:
            return record
    return None


def _select(pipeline: Pipeline) -> str:
    """``route`` and ``join`` as one SELECT of the contract's columns over the appended events."""
    spec = pipeline.spec
    added = set(spec.join.columns) if spec.join else set()
    columns = ", ".join(f'{"r" if name in added else "e"}."{name}"' for name in pipeline.contract.names)
    query = f"SELECT {columns} FROM appended e"
    if spec.join:
        query += f' LEFT JOIN reference r ON e."{spec.join.key}" = r."{spec.join.key}"'
    if spec.route:
        query += f""" WHERE e."{spec.route.field}" = '{spec.route.value.replace("'", "''")}'"""
    return query


def _run(context: Any, query: str, name: str) -> pa.Table:
    try:
        result: pa.Table = context.sql(query).to_arrow_table()
    except Exception as exc:  # DataFusion raises its own exceptions for a bad query
        raise derive_io.DeriveError(f"{name}: the operator's query failed: {exc}") from exc
    return result


def _windows(
    pipeline: Pipeline, window: Window, context: Any, position: str | None, late: bool
) -> tuple[pa.Table, str | None]:
    """The windows the watermark has closed since ``position`` (and, when incremental, the appended
    events all of whose windows were closed before: late), and the new position."""

    time, key, size, hop = f'"{window.time}"', f'"{window.key}"', window.size_minutes, window.hop
    keys = [k for k in _input_key(pipeline) if k not in (window.key, window.time)]
    shown = ", ".join(f'"{c}"' for c in [window.key, window.time, *keys])  # never a protected column
    cutoff = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=window.future_tolerance_minutes)
    future = _run(  # a bad clock's event: refused, and it never moves the watermark
        context,
        f"SELECT {shown} FROM {'appended' if late else 'events'} WHERE {time} > {_literal(cutoff)}",
        pipeline.spec.name,
    )
    reason = f"in the future: after {cutoff.isoformat()} (future_tolerance_minutes)"
    refused = [_refused_rows(pipeline, future, reason)] if future.num_rows else []
    excluded = _refused_before(pipeline, future)  # never in a window later, once its time has come
    query = f"SELECT MAX({time}) AS newest FROM events WHERE {time} <= {_literal(cutoff)}"
    newest = _run(context, query, pipeline.spec.name)[0][0].as_py()
    if newest is None:
        return _stack(pipeline, refused), position
    watermark = newest - timedelta(minutes=window.allowed_lateness_minutes)
    epoch = datetime(1970, 1, 1, tzinfo=watermark.tzinfo)
    closed_upto = epoch + timedelta(minutes=(watermark - epoch) // timedelta(minutes=hop) * hop)
    written = datetime.fromisoformat(position) if position else None
    condition = f" AND ({window.where})" if window.where else ""
    bin_start = f"date_bin(INTERVAL '{hop} minutes', {time}, {EPOCH})"
    parts = refused
    if written is None or closed_upto > written:
        shifts = ", ".join(f"(INTERVAL '{k * hop} minutes')" for k in range(size // hop))
        since = f" AND {time} >= {_literal(written - timedelta(minutes=size))}" if written else ""
        aggregates = ", ".join(f'{sql} AS "{name}"' for name, sql in window.aggregates.items())
        end = f"window_start + INTERVAL '{size} minutes'"
        after = f" AND {end} > {_literal(written)}" if written else ""
        query = (
            f"WITH shifts AS (SELECT column1 AS shift FROM (VALUES {shifts})), "
            f"assigned AS (SELECT e.*, {bin_start} - s.shift AS window_start FROM events e "
            f"CROSS JOIN shifts s WHERE TRUE{since}{condition}{excluded}) "
            f"SELECT {key}, window_start, {end} AS window_end, {aggregates} FROM assigned "
            f"WHERE {end} <= {_literal(closed_upto)}{after} GROUP BY {key}, window_start"
        )
        parts.append(_run(context, query, pipeline.spec.name))
    if late and written is not None:
        too_late = _run(
            context,
            f"SELECT {shown} FROM appended WHERE {bin_start} + INTERVAL '{size} minutes' <= "
            f"{_literal(written)}{condition}",
            pipeline.spec.name,
        )
        reason = f"late: all of its windows were written (the watermark passed {written.isoformat()})"
        parts.append(_refused_rows(pipeline, too_late, reason))
    result = _stack(pipeline, parts)
    return result, (max(closed_upto, written) if written else closed_upto).isoformat()


def _refused_before(pipeline: Pipeline, future: pa.Table) -> str:
    """An SQL condition that keeps out the events refused as in the future, by this run and the
    runs before (kept in the dataset's table property ``base.refused-future``, by input key), so
    a refused event is never counted in a window once its time comes: one place, not two."""
    key = _input_key(pipeline)
    table = tables.load(pipeline.spec.name)
    known = json.loads(table.properties.get(REFUSED_FUTURE, "[]")) if table is not None else []
    found = [[row[k] for k in key] for row in future.select(list(key)).to_pylist()] if future.num_rows else []
    distinct = dict.fromkeys(json.dumps(k, default=str) for k in [*known, *found])
    keys = [json.loads(k) for k in distinct][-REFUSED_KEPT:]
    if table is not None and len(keys) != len(known):
        with table.transaction() as tx:
            tx.set_properties({REFUSED_FUTURE: json.dumps(keys, default=str)})
    if not keys:
        return ""

    def literal(value: Any) -> str:
        return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"

    matches = " OR ".join(
        "(" + " AND ".join(f'e."{name}" = {literal(v)}' for name, v in zip(key, values, strict=True)) + ")"
        for values in keys
    )
    return f" AND NOT ({matches})"


def _refused_rows(pipeline: Pipeline, events: pa.Table, reason: str) -> pa.Table:
    """Events as refused rows of the result (late, or from the future): no values, a reason, and
    the event as JSON."""
    import pyarrow as pa

    raw = [json.dumps(row, default=str, sort_keys=True) for row in events.to_pylist()]
    columns = {name: pa.nulls(len(raw)) for name in pipeline.contract.names}
    return pa.table(
        columns | {REJECT: pa.array([reason] * len(raw), pa.string()), RAW: pa.array(raw, pa.string())}
    )


def _stack(pipeline: Pipeline, parts: list[pa.Table]) -> pa.Table:
    import pyarrow as pa

    if not parts:
        return _empty(pipeline)
    return pa.concat_tables(parts, promote_options="permissive")


def _empty(pipeline: Pipeline) -> pa.Table:
    import pyarrow as pa

    return pa.table({name: pa.array([], pa.string()) for name in pipeline.contract.names})


def _input_key(pipeline: Pipeline) -> tuple[str, ...]:
    from base_platform.pipelines.spec import pipeline_named

    return pipeline_named(pipeline.spec.inputs[0]).contract.primary_key


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.strftime('%Y-%m-%dT%H:%M:%S')}Z'"


def _as_contract_text(pipeline: Pipeline, result: pa.Table) -> pa.Table:
    """The contract's columns in its order, times and dates as it parses them; refusals kept."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for column in pipeline.contract.columns:
        values = (
            result.column(column.name) if column.name in result.column_names else pa.nulls(result.num_rows)
        )
        if column.type in ("timestamp", "date") and pa.types.is_temporal(values.type):
            values = conformance.render_text(values.combine_chunks(), column)
        columns[column.name] = values
    for extra in (REJECT, RAW):
        if extra in result.column_names:
            columns[extra] = result.column(extra)
    keys = [(name, "ascending") for name in pipeline.contract.primary_key]
    return pa.table(columns).sort_by(keys)

"""data_distribution: hand a dataset's snapshot to its consumers, as the spec's ``distribution:`` says.

Each target publishes one snapshot, the one an Asset event names, and remembers it, so a
re-run publishes nothing twice:

- ``postgres``: the rows into a table of the consumer's database, upserted by the contract's
  primary key in one transaction (COPY into a staging table, then one merge); the control table
  ``base_publications`` holds the published snapshot, in the same transaction;
- ``s3``: the snapshot's changed partitions as Parquet under ``<uri>/snapshot=<id>/``, and a
  manifest with rows and SHA-256 per file written last, so a consumer that reads manifests never
  sees a half-written export. Manifests are numbered (``export``); the highest is the published
  snapshot. A rollback to a snapshot exported before is exported again, under
  ``snapshot=<id>.<export>/``, as the change from the newest export.

What changed since the published snapshot comes from Iceberg's file lists: files only the new
snapshot has were appended. When the published snapshot also had files the new one lacks (a
full refresh, a rollback, an erasure, a compaction), Postgres gets the whole snapshot and loses
the keys it no longer has, and S3 gets every partition that lost or gained a file.

Protected columns go out as stored (HMAC digests, masked text), never decrypted: a dataset with
encrypted columns cannot name a ``postgres`` or ``s3`` target (the spec refuses it).
"""

from __future__ import annotations

import binascii
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from base_platform.files import Location
from base_platform.pipelines.data_quality import table_keys
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_storage.snapshot_diff import change, partition_of
from base_platform.pipelines.spec import Pipeline, PostgresTarget, S3Target

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import FileScanTask, Table

CONTROL_TABLE = "base_publications"
EXPORT_MANIFEST = "_manifest.json"
SCRUBBED = "_scrubbed.json"  # how many erased subjects' tokens the exports were scrubbed of
SNAPSHOT_DIR = "snapshot="
POSTGRES_TYPES = {
    "string": "text",
    "int64": "bigint",
    "float64": "double precision",
    "binary": "bytea",
    "timestamp": "timestamptz",
    "date": "date",
    "bool": "boolean",
}


class PublishError(ValueError):
    """A snapshot this target cannot publish; retrying does not help."""


def snapshot_to_publish(table: Table, triggered: int | None, requested: str | None) -> int:
    """The snapshot a run publishes: the one asked for, else the newest event's, else the current one.

    It must be on ``main``'s history, whoever chose it: a staged snapshot, the audit an open
    breaker holds, or a discarded one never passed its audit, and one a rollback took off
    ``main`` after its event was sent is no longer what the dataset says, so no consumer gets it."""
    name = ".".join(table.name())
    try:
        chosen = tables.existing_snapshot(table, int(requested) if requested else triggered)
    except tables.NoSnapshot as exc:
        raise PublishError(f"{name}: {exc}") from exc
    if not any(s.snapshot_id == chosen for s in tables.lineage(table)):
        raise PublishError(f"{name}: snapshot {chosen} is not on main ({_off_main(table, chosen)})")
    return chosen


def _off_main(table: Table, snapshot_id: int) -> str:
    """Why a snapshot the table has is not on ``main``, for the refusal."""
    from base_platform.pipelines.pipeline_management.breaker import AUDIT

    audit = table.metadata.refs.get(AUDIT)
    if audit is not None and audit.snapshot_id == snapshot_id:
        return "an audit the breaker holds: publish it with pipeline_control first"
    return "staged, discarded or rolled back: only audited snapshots on main are published"


def _read(table: Table, tasks: list[FileScanTask]) -> pa.Table:
    """The rows of these files in the table's current schema (older files get its new columns)."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)


# --- postgres ---------------------------------------------------------------------------------


def postgres_type(pipeline: Pipeline, column: str) -> str:
    """The column's type in the consumer's table, as protection stores it."""
    protection = pipeline.spec.security.columns.get(column)
    if protection is not None and protection.protect == "hmac":
        return "bytea"
    if protection is not None and protection.protect == "mask":
        return "text"
    spec = pipeline.contract.column(column)
    if decimal := spec.decimal:
        return f"numeric({decimal[0]},{decimal[1]})"
    return POSTGRES_TYPES[spec.type]


def stored_columns(pipeline: Pipeline) -> list[str]:
    dropped = {name for name, p in pipeline.spec.security.columns.items() if p.protect == "drop"}
    return [name for name in pipeline.contract.names if name not in dropped]


def _csv(rows: pa.Table) -> bytes:
    """The rows as CSV for COPY: digests as Postgres' bytea hex (``\\x…``), nulls as empty fields."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = []
    for column in rows.columns:
        array = column.combine_chunks()
        if pa.types.is_fixed_size_binary(array.type) or pa.types.is_binary(array.type):
            array = _bytea_hex(array)
        columns.append(array)
    buffer = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    pacsv.write_csv(pa.table(columns, names=rows.column_names), buffer, options)
    return buffer.getvalue()


def _bytea_hex(array: pa.Array) -> pa.Array:
    """``\\x`` and the hex of each digest, as text COPY reads into bytea: one pass over the buffer."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_fixed_size_binary(array.type) or not len(array):
        return pa.array([None if v is None else "\\x" + v.hex() for v in array.to_pylist()], pa.string())
    width, count = array.type.byte_width, len(array)
    filled = pc.fill_null(array, b"\0" * width)
    data = filled.buffers()[1].to_pybytes()[filled.offset * width : (filled.offset + count) * width]
    hexed = np.frombuffer(binascii.hexlify(data), dtype=np.uint8).reshape(count, 2 * width)
    prefix = np.tile(np.frombuffer(b"\\x", dtype=np.uint8), (count, 1))
    step = 2 + 2 * width
    offsets = np.arange(0, step * (count + 1), step, dtype=np.int32)
    text = pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(np.hstack([prefix, hexed]).tobytes())
    )
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text)


def publish_postgres(
    pipeline: Pipeline, table: Table, snapshot_id: int, target: PostgresTarget
) -> dict[str, Any]:
    """Upsert the snapshot's rows into the consumer's table, once; everything in one transaction."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg import sql

    dataset, columns = pipeline.spec.name, stored_columns(pipeline)
    control = sql.Identifier(CONTROL_TABLE)
    conn: Any = PostgresHook(postgres_conn_id=target.conn_id).get_conn()  # psycopg 3
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{dataset}/{target.name}",))
            _ensure_tables(cursor, pipeline, target)
            query = sql.SQL("SELECT snapshot_id FROM {} WHERE dataset = %s AND target = %s").format(control)
            cursor.execute(query, (dataset, target.name))
            found = cursor.fetchone()
            published = found[0] if found else None
            if published == snapshot_id:
                return {"target": target.name, "snapshot_id": snapshot_id, "published": False}
            delta = change(table, snapshot_id, published)
            rows = _read(table, delta.tasks).select(columns)
            upserted, deleted = _merge(cursor, pipeline, target, rows, delta.whole)
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {} (dataset, target, snapshot_id, published_at, rows_upserted, rows_deleted)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dataset, target) DO UPDATE SET"
                    " snapshot_id = EXCLUDED.snapshot_id, published_at = EXCLUDED.published_at,"
                    " rows_upserted = EXCLUDED.rows_upserted, rows_deleted = EXCLUDED.rows_deleted"
                ).format(control),
                (dataset, target.name, snapshot_id, datetime.now(UTC), upserted, deleted),
            )
    finally:
        conn.close()
    return {
        "target": target.name,
        "snapshot_id": snapshot_id,
        "published": True,
        "since": published,
        "whole": delta.whole,
        "rows_upserted": upserted,
        "rows_deleted": deleted,
    }


def _ensure_tables(cursor: Any, pipeline: Pipeline, target: PostgresTarget) -> None:
    """The control table, and the consumer's table made from the contract or given its new columns."""
    from psycopg import sql

    cursor.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (dataset text NOT NULL, target text NOT NULL,"
            " snapshot_id bigint NOT NULL, published_at timestamptz NOT NULL,"
            " rows_upserted bigint NOT NULL, rows_deleted bigint NOT NULL, PRIMARY KEY (dataset, target))"
        ).format(sql.Identifier(CONTROL_TABLE))
    )
    schema, name = target.table.split(".")
    consumer = sql.Identifier(schema, name)
    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, name),
    )
    existing = {row[0] for row in cursor.fetchall()}
    columns = stored_columns(pipeline)
    if not existing:
        definitions = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(column),
                sql.SQL(postgres_type(pipeline, column)),
                sql.SQL("" if pipeline.contract.column(column).nullable else " NOT NULL"),
            )
            for column in columns
        ]
        cursor.execute(
            sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
                consumer, sql.SQL(", ").join(definitions), _names(pipeline.contract.primary_key)
            )
        )
        return
    gone = sorted(existing - set(columns))
    if gone:
        raise PublishError(
            f"{target.table} has columns the contract does not ({', '.join(gone)}): "
            "a breaking change needs the consumer's table migrated first"
        )
    for column in columns:
        if column not in existing:  # a compatible change: a new optional column
            cursor.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    consumer, sql.Identifier(column), sql.SQL(postgres_type(pipeline, column))
                )
            )


def _names(columns: Any) -> Any:
    from psycopg import sql

    return sql.SQL(", ").join(sql.Identifier(column) for column in columns)


def _merge(
    cursor: Any, pipeline: Pipeline, target: PostgresTarget, rows: pa.Table, whole: bool
) -> tuple[int, int]:
    """COPY into a staging table, then upsert by primary key; a whole snapshot also deletes the
    consumer's rows whose keys it no longer has. Returns (rows upserted, rows deleted).

    ``rows`` come oldest commit first, so where two runs stored one key the later one wins.
    """
    from psycopg import sql

    consumer, key = sql.Identifier(*target.table.split(".")), pipeline.contract.primary_key
    columns = _names(rows.column_names)
    cursor.execute(
        sql.SQL("CREATE TEMP TABLE base_staging (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(consumer)
    )
    cursor.execute("ALTER TABLE base_staging ADD COLUMN base_ordinal bigserial")  # the order COPY read
    with cursor.copy(sql.SQL("COPY base_staging ({}) FROM STDIN WITH (FORMAT csv)").format(columns)) as copy:
        copy.write(_csv(rows))
    updates = [
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(column))
        for column in rows.column_names
        if column not in key
    ]
    action = (
        sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("DO NOTHING")
    )
    cursor.execute(
        # a key that two runs stored (uniqueness holds within a run): the later run's row wins
        sql.SQL(
            "INSERT INTO {} ({}) SELECT DISTINCT ON ({}) {} FROM base_staging"
            " ORDER BY {}, base_ordinal DESC ON CONFLICT ({}) {}"
        ).format(consumer, columns, _names(key), columns, _names(key), _names(key), action)
    )
    upserted, deleted = cursor.rowcount, 0
    if whole:
        matches = sql.SQL(" AND ").join(
            sql.SQL("s.{0} = t.{0}").format(sql.Identifier(column)) for column in key
        )
        cursor.execute(
            sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM base_staging s WHERE {})").format(
                consumer, matches
            )
        )
        deleted = cursor.rowcount
    return upserted, deleted


# --- s3 ---------------------------------------------------------------------------------------


def published_export(location: Location) -> dict[str, Any] | None:
    """The newest complete export under the target: the manifest with the highest ``export``
    number (by our own count, not Iceberg's sequence numbers, which a rollback goes back on)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(location.base, recursive=False, allow_not_found=True)
    newest: dict[str, Any] | None = None
    for info in location.fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith(SNAPSHOT_DIR):
            continue
        if not location.exists(info.base_name, EXPORT_MANIFEST):
            continue  # an export that did not finish: no consumer reads it
        manifest = location.read_json(info.base_name, EXPORT_MANIFEST)
        if newest is None or manifest["export"] > newest["export"]:
            newest = manifest
    return newest


def export_s3(pipeline: Pipeline, table: Table, snapshot_id: int, target: S3Target) -> dict[str, Any]:
    """The snapshot's changed partitions as Parquet, then their manifest, under ``snapshot=<id>/``."""
    import pyarrow.parquet as pq

    location = Location.of(target.uri)
    scrubbed = scrub_exports(pipeline, location, table_keys.suppressed(Location.of(table.location())))
    last = published_export(location)
    if last is not None and last["snapshot_id"] == snapshot_id:
        return {"target": target.name, "snapshot_id": snapshot_id, "published": False, **scrubbed}
    export = last["export"] + 1 if last else 1
    folder = f"{SNAPSHOT_DIR}{snapshot_id}"
    if location.exists(folder, EXPORT_MANIFEST):  # exported before, and a rollback came back to it
        folder = f"{folder}.{export}"
    location.delete_dir(folder)  # what an attempt that died left: the export starts afresh
    delta = change(table, snapshot_id, last["snapshot_id"] if last else None)
    chosen = [task for task in delta.files if partition_of(table, task) in delta.partitions]
    columns = stored_columns(pipeline)
    files = []
    for number, task in enumerate(sorted(chosen, key=lambda t: t.file.file_path)):
        partition = partition_of(table, task)
        rows = _read(table, [task]).select(columns)
        sink = io.BytesIO()
        pq.write_table(rows, sink, compression="zstd")
        data = sink.getvalue()
        path = f"{partition}/part-{number:05d}.parquet" if partition else f"part-{number:05d}.parquet"
        location.write_atomically(data, folder, path)
        files.append(
            {
                "path": path,
                "partition": partition,
                "rows": rows.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    snapshot = table.snapshot_by_id(snapshot_id)
    assert snapshot is not None, "snapshot_to_publish checked it"
    manifest = {
        "export": export,
        "folder": folder,
        "dataset": pipeline.spec.name,
        "contract_version": pipeline.contract.version,
        "snapshot_id": snapshot_id,
        "sequence_number": snapshot.sequence_number,
        "committed_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC).isoformat(),
        "since_snapshot_id": delta.published,
        "partitions": delta.partitions,  # replace these; a partition with no file here is now empty
        "whole": delta.whole,  # every partition of the snapshot is here
        "rows": sum(f["rows"] for f in files),
        "files": files,
    }
    location.write_json_atomically(manifest, folder, EXPORT_MANIFEST)
    return {
        "target": target.name,
        "snapshot_id": snapshot_id,
        "published": True,
        "partitions": len(delta.partitions),
        "files": len(files),
        "rows": manifest["rows"],
        **scrubbed,
    }


def scrub_exports(pipeline: Pipeline, location: Location, suppressed: Any) -> dict[str, int]:
    """Every earlier export without the rows of the subjects erased since (``suppressed``: their
    tokens, see ``erasure``): each file that held one rewritten, its manifest entry with it.
    ``_scrubbed.json`` says for how many tokens the exports are clean, so this runs once per
    erasure, not per publication."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from base_platform.pipelines.data_quality.key_uniqueness import erased_rows

    done = location.read_json(SCRUBBED)["tokens"] if location.exists(SCRUBBED) else 0
    hmac = [name for name, rule in pipeline.spec.security.columns.items() if rule.protect == "hmac"]
    if not hmac or len(suppressed) <= done:
        return {"rows_scrubbed": 0}
    removed = 0
    selector = pafs.FileSelector(location.base, recursive=False, allow_not_found=True)
    for folder in location.fs.get_file_info(selector):
        if folder.type != pafs.FileType.Directory or not location.exists(folder.base_name, EXPORT_MANIFEST):
            continue
        manifest = location.read_json(folder.base_name, EXPORT_MANIFEST)
        changed = False
        for entry in manifest["files"]:
            with location.fs.open_input_file(location.path(folder.base_name, entry["path"])) as source:
                rows = pq.read_table(source)
            erased = erased_rows(pipeline, rows, suppressed)
            if not erased.any():
                continue
            kept = rows.filter(pa.array(~erased))
            sink = io.BytesIO()
            pq.write_table(kept, sink, compression="zstd")
            data = sink.getvalue()
            location.write_atomically(data, folder.base_name, entry["path"])
            entry |= {"rows": kept.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            removed, changed = removed + int(erased.sum()), True
        if changed:
            manifest["rows"] = sum(entry["rows"] for entry in manifest["files"])
            location.write_json_atomically(manifest, folder.base_name, EXPORT_MANIFEST)
    location.write_json_atomically({"tokens": len(suppressed)}, SCRUBBED)
    return {"rows_scrubbed": removed}


def summary_text(pipeline: Pipeline, table: Table, snapshot_id: int) -> str:
    """What a webhook subscriber is told: the dataset, the snapshot and its run's counts."""
    snapshot = table.snapshot_by_id(snapshot_id)
    record = tables.run_record(snapshot) if snapshot is not None else None
    counts = {
        "rows_in": record.rows_in if record else None,
        "rows_stored": record.rows_stored if record else None,
        "rows_quarantined": record.rows_quarantined if record else None,
        "run": record.run if record else None,
        "dag_run": record.dag_run if record else None,
    }
    return json.dumps({"dataset": pipeline.spec.name, "snapshot_id": snapshot_id, **counts})

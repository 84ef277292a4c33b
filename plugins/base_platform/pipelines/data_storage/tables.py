"""Curated datasets as Apache Iceberg tables, in pyiceberg's SQL catalog.

The engine writes a run's Parquet files as before; :func:`commit_files` adds them to the
dataset's table as **one snapshot per run**, whose summary records the run: the DAG run, the
rows in, stored and quarantined, the inputs' checksums, per-stage seconds and null counts. That
summary is the only record of a run: discover's skip list, the monitor's history, the catalog
entry and the platform page all read it from the table.

The catalog is the Airflow connection ``iceberg_default``: conn type ``sqlite`` (host: the
database file) or ``postgres`` (host, port, login, password, schema: the database); the extra
``warehouse`` is the catalog's default location for a table made without one. A table on
``s3://`` uses the amazon provider's connection, as every other file we write does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from base_platform.files import resolve, s3_settings
from base_platform.pipelines.run_records import SUMMARY_PREFIX, RunRecord, highest
from base_platform.pipelines.spec import Contract, Pipeline, classify_change

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

CONN_ID = "iceberg_default"
NAMESPACE = "base"
PREFIX = SUMMARY_PREFIX  # our keys in snapshot summaries and table properties
CONTRACT_PROPERTY = f"{PREFIX}contract"
EXPIRED_INPUTS = f"{PREFIX}expired-inputs"  # input checksum -> run, of runs whose snapshots expired
EXPIRED_RUNS = f"{PREFIX}expired-runs"  # the newest run records whose snapshots expired, for history
HISTORY_KEPT = 30  # run records the monitor compares with, and the page shows
NAME_MAPPING = "schema.name-mapping.default"
MAIN = "main"  # the branch readers see
DISCARDED_INPUTS = f"{PREFIX}discarded-inputs"  # input checksum -> run, of audits an operator discarded
EXPIRED_POSITION = f"{PREFIX}expired-position"  # main's position when an expiry took its run snapshots
DISCARDED_POSITION = f"{PREFIX}discarded-position"  # the furthest position of a discarded audit (JSON)
FOOTER_THREADS = 8  # data files whose footers are read at once when a commit describes them


class ContractChanged(ValueError):
    """The contract changed since the table was made without the version saying how."""


class TableMismatch(ValueError):
    """The run's target is not where the dataset's table lives."""


def stored_schema(pipeline: Pipeline) -> pa.Schema:
    """The curated rows' schema: the contract's, as protection stores it (the table's schema)."""
    from base_platform.pipelines.data_security import protection
    from base_platform.pipelines.schema_contracts import conformance

    return protection.protected_schema(conformance.arrow_schema(pipeline.contract), pipeline.spec.security)


def catalog() -> SqlCatalog:
    """The SQL catalog of ``iceberg_default``, with S3 credentials from the amazon connection."""
    return _open_catalog(catalog_settings())


def catalog_settings() -> tuple[str, str | None]:
    """``iceberg_default``'s (database URL, warehouse), read from one connection lookup."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(CONN_ID)
    warehouse = conn.extra_dejson.get("warehouse")
    return _database_url(conn), resolve(warehouse) if warehouse else None


def _open_catalog(settings: tuple[str, str | None]) -> SqlCatalog:
    from pyiceberg.catalog.sql import SqlCatalog

    uri, warehouse = settings
    properties = {"uri": uri, "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if warehouse:
        properties["warehouse"] = warehouse
    return SqlCatalog(NAMESPACE, **properties, **_s3_properties())


# Catalogs the api-server's reads share, by iceberg_default's settings: opening one builds a database
# engine and queries the catalog's tables, per table a request read before. The settings are the key,
# so a changed connection opens a new one at once; the TTL bounds how long S3 credentials read at
# opening are used (boto hands out temporary ones with at least 10 minutes left).
SHARED_CATALOG_SECONDS = 300
_shared: TTLCache[tuple[str, str | None], SqlCatalog] = TTLCache(maxsize=4, ttl=SHARED_CATALOG_SECONDS)
_shared_lock = threading.Lock()


def shared_catalog() -> SqlCatalog:
    """This process's catalog of ``iceberg_default``, for reads (one connection lookup a call);
    thread-safe: SQLAlchemy's engine pools its connections. :func:`forget_shared_catalogs` empties it."""
    settings = catalog_settings()
    with _shared_lock:
        found = _shared.get(settings)
        if found is None:
            found = _shared[settings] = _open_catalog(settings)
        return found


def forget_shared_catalogs() -> None:
    """Drop the shared catalogs (a test's, or after a change the settings do not show: S3's keys)."""
    with _shared_lock:
        _shared.clear()


def catalog_uri() -> str:
    """The SQLAlchemy URL of ``iceberg_default``'s database (what platform_backup dumps)."""
    from airflow.sdk import BaseHook

    return _database_url(BaseHook.get_connection(CONN_ID))


def _database_url(conn: Any) -> str:
    from sqlalchemy.engine import URL

    if conn.conn_type == "sqlite":
        database = Path(resolve(conn.host or "iceberg.db"))
        database.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{database}"
    if conn.conn_type == "postgres":
        return URL.create(
            "postgresql+psycopg2",
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            database=conn.schema,
        ).render_as_string(hide_password=False)
    raise ValueError(f"connection {CONN_ID}: conn_type {conn.conn_type!r}, expected sqlite or postgres")


def _s3_properties() -> dict[str, str]:
    """pyiceberg's FileIO settings for S3, from the same connection as :func:`files.s3_filesystem`."""
    settings = s3_settings(required=False)
    if settings is None:
        return {}
    found = {
        "s3.access-key-id": settings.get("access_key"),
        "s3.secret-access-key": settings.get("secret_key"),
        "s3.session-token": settings.get("session_token"),
        "s3.region": settings.get("region"),
        "s3.endpoint": settings.get("endpoint_override"),
    }
    return {key: value for key, value in found.items() if value}


def identifier(name: str) -> str:
    return f"{NAMESPACE}.{name}"


def load(name: str, within: SqlCatalog | None = None) -> Table | None:
    """The dataset's table, or None; ``within`` an open catalog (one for many loads: opening one
    builds a database engine)."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return (within or catalog()).load_table(identifier(name))
    except NoSuchTableError:
        return None


def prepare(pipeline: Pipeline, schema: pa.Schema, target_uri: str, full_refresh: bool) -> Table:
    """The dataset's table, made on first use and evolved to the contract.

    A compatible change (a new optional column) evolves the schema. A breaking change needs a
    new major version and a full refresh, which replaces every row; any change needs a new version.
    """
    location = resolve(target_uri)
    table = load(pipeline.spec.name)
    if table is None:
        return _create(pipeline, schema, location)
    if table.location().rstrip("/") != location:
        raise TableMismatch(
            f"table {identifier(pipeline.spec.name)} lives at {table.location()}, not {location}"
        )
    if regrouped := _multi_value_changes(pipeline, table):
        raise TableMismatch(
            f"table {identifier(pipeline.spec.name)} stores {', '.join(regrouped)} with another "
            "`separator` than the spec now has: drop the table and ingest again (full_refresh)"
        )
    old = Contract.model_validate_json(table.properties[CONTRACT_PROPERTY])
    kind, reasons = classify_change(old, pipeline.contract)
    if not reasons:
        return table
    _check_version(old, pipeline.contract, kind, reasons, full_refresh)
    with table.transaction() as tx:
        with tx.update_schema(allow_incompatible_changes=kind == "breaking") as update:
            for name in set(old.names) - set(pipeline.contract.names):
                update.delete_column(name)
            update.union_by_name(schema)
        tx.set_properties({CONTRACT_PROPERTY: pipeline.contract.model_dump_json()})
    return _map_names(table.refresh())


def _create(pipeline: Pipeline, schema: pa.Schema, location: str) -> Table:
    """A new table: the schema, the spec's partitioning, and a name mapping, because the engine's
    files carry column names, not Iceberg field ids (the ``add_files`` way)."""
    from pyiceberg.transforms import DayTransform, IdentityTransform, Transform

    ours = catalog()
    ours.create_namespace_if_not_exists(NAMESPACE)
    made = ours.create_table(
        identifier(pipeline.spec.name),
        schema=schema,
        location=location,
        properties={
            CONTRACT_PROPERTY: pipeline.contract.model_dump_json(),
            "write.parquet.compression-codec": "zstd",
            "write.target-file-size-bytes": str(pipeline.spec.storage.target_file_mb << 20),
            # no bounds of protected values in Iceberg's manifests, which are not encrypted
            **{f"write.metadata.metrics.column.{name}": "none" for name in unbounded_columns(pipeline)},
        },
    )
    with made.transaction() as tx, tx.update_spec() as spec:
        for partition in pipeline.spec.storage.partitions:
            transform: Transform[Any, Any] = (
                DayTransform() if partition.transform == "day" else IdentityTransform()
            )
            spec.add_field(partition.column, transform, partition.name)
    return _map_names(made.refresh())


def _multi_value_changes(pipeline: Pipeline, table: Table) -> list[str]:
    """HMAC columns stored as one digest that the spec now splits into a list, or the reverse:
    no schema evolution turns one into the other."""
    from pyiceberg.types import ListType

    schema = table.schema()
    return [
        name
        for name, rule in sorted(pipeline.spec.security.columns.items())
        if rule.protect == "hmac"
        and name in schema.column_names
        and isinstance(schema.find_type(name), ListType) != bool(rule.separator)
    ]


def unbounded_columns(pipeline: Pipeline) -> list[str]:
    """Columns whose values never go into manifests as bounds: encrypted ones, and HMACs, whose
    bounds would be a subject's pseudonym outside the data files that ``dataset_erase`` rewrites."""
    protections = pipeline.spec.security.columns
    return sorted(name for name, p in protections.items() if p.protect in ("encrypt", "hmac"))


def _map_names(table: Table) -> Table:
    """The name mapping of the table's current schema: how readers find its columns in our files."""
    with table.transaction() as tx:
        tx.set_properties({NAME_MAPPING: table.schema().name_mapping.model_dump_json()})
    return table.refresh()


def _check_version(old: Contract, new: Contract, kind: str, reasons: list[str], full_refresh: bool) -> None:
    said = "; ".join(reasons)
    old_major, new_major = int(old.version.split(".")[0]), int(new.version.split(".")[0])
    if kind == "breaking" and new_major <= old_major:
        raise ContractChanged(
            f"contract {new.name} {old.version} -> {new.version} is breaking ({said}): "
            "it needs a new major version"
        )
    if kind == "breaking" and not full_refresh:
        raise ContractChanged(
            f"contract {new.name} {old.version} -> {new.version} is breaking ({said}): "
            "run with full_refresh to replace every row"
        )
    if new.version == old.version:
        raise ContractChanged(f"contract {new.name} changed ({said}) but kept version {new.version}")


def location_of(pipeline: Pipeline, table: Table | None) -> str:
    """Where the dataset lives: its table's location, or before a first commit its ``storage.uri``."""
    return table.location() if table is not None else resolve(pipeline.spec.storage.uri)


def lineage(table: Table) -> Iterator[Snapshot]:
    """The current snapshot and its ancestors, newest first: what the table's data is made of."""
    from pyiceberg.table.snapshots import ancestors_of

    current = table.current_snapshot()
    if current is not None:
        yield from ancestors_of(current, table.metadata)


class NotServed(LookupError):
    """A snapshot that may not leave the platform (a 404 on the APIs): not on ``main``'s history
    (staged for its audit, discarded by it, rolled back), or no longer in the table (expired)."""


def served(table: Table, snapshot_id: int, parameter: str) -> Snapshot:
    """The snapshot, if it is on ``main``'s history and not expired; else :class:`NotServed`, saying
    why, after ``parameter`` (what named the snapshot: ``as_of``, ``cursor``, a feature view)."""
    for snapshot in lineage(table):
        if snapshot.snapshot_id == snapshot_id:
            return snapshot
    if table.snapshot_by_id(snapshot_id) is None:
        raise NotServed(f"{parameter}: no snapshot {snapshot_id} (expired, or never made)")
    refs = sorted(name for name, ref in table.metadata.refs.items() if ref.snapshot_id == snapshot_id)
    if "audit" in refs:
        raise NotServed(
            f"{parameter}: snapshot {snapshot_id} is staged on the audit branch: its run has not passed "
            "its audit, so it is not served"
        )
    raise NotServed(
        f"{parameter}: snapshot {snapshot_id} is not on main's history (its audit discarded it, or a "
        "rollback left it), so it is not served"
    )


def committed_inputs(table: Table) -> dict[str, str]:
    """Input checksum -> run, of every run in the current lineage (since the last full refresh),
    of the runs whose snapshots expired (which ``maintenance.expire`` carried over), and of the
    audits an operator discarded (a corrected file has a new checksum and is read again)."""
    inputs: dict[str, str] = {}
    for snapshot in lineage(table):
        properties = snapshot.summary.additional_properties if snapshot.summary else {}
        run = properties.get(f"{PREFIX}run")
        if run is None:
            continue
        for source in json.loads(properties[f"{PREFIX}inputs"]):
            inputs.setdefault(source["sha256"], run)
        if properties.get(f"{PREFIX}full-refresh") == "true":
            return inputs  # what came before a full refresh is no longer the table's
    expired: dict[str, str] = json.loads(table.properties.get(EXPIRED_INPUTS, "{}"))
    discarded: dict[str, str] = json.loads(table.properties.get(DISCARDED_INPUTS, "{}"))
    return discarded | expired | inputs


def committed_position(table: Table) -> Any:
    """Where an incremental source stands: the position of the newest run on ``main``, or of an
    audit an operator discarded after it (its rows are not read again); None before any. When
    the runs' snapshots expired under a later one (an erasure's delete, a compaction), the
    position an expiry carried over (``EXPIRED_POSITION``)."""
    discarded = table.properties.get(DISCARDED_POSITION)
    for snapshot in lineage(table):
        record = run_record(snapshot)
        if record is not None:
            return highest([record.position, discarded and json.loads(discarded)])
    carried = table.properties.get(EXPIRED_POSITION)
    return highest([discarded and json.loads(discarded), carried and json.loads(carried)])


class NoSnapshot(ValueError):
    """The snapshot asked for is not in the table (expired, or never made), or it has none yet."""


def existing_snapshot(table: Table, snapshot_id: int | None) -> int:
    """``snapshot_id`` if the table has it, else (for None) its current snapshot."""
    if snapshot_id is None:
        current = table.current_snapshot()
        if current is None:
            raise NoSnapshot("no snapshot yet")
        return current.snapshot_id
    if table.snapshot_by_id(snapshot_id) is None:
        raise NoSnapshot(f"no snapshot {snapshot_id} (expired, or never made)")
    return snapshot_id


def snapshot_of_run(table: Table, run_key: str) -> Snapshot | None:
    """The snapshot a run committed, if any: a retried commit finds it and adds nothing."""
    for snapshot in table.snapshots():
        if snapshot.summary and snapshot.summary.additional_properties.get(f"{PREFIX}run") == run_key:
            return snapshot
    return None


def expired_run(table: Table, run_key: str) -> RunRecord | None:
    """The record of a run whose snapshot an expiry took (kept in ``EXPIRED_RUNS``), if any."""
    found = [RunRecord.from_json(r) for r in json.loads(table.properties.get(EXPIRED_RUNS, "[]"))]
    return next((record for record in found if record.run == run_key), None)


def commit_files(
    table: Table,
    paths: list[str],
    properties: dict[str, str],
    replace_all: bool,
    decryption: Any = None,
    branch: str | None = MAIN,
    removed: Sequence[str] = (),
) -> Snapshot:
    """Add the run's data files as one snapshot: a fast append, or with ``replace_all`` one
    overwrite that also removes every current file (a full refresh), or the current files
    ``removed`` names (a merge's: it added them again without the rows it updated).

    ``branch=None`` stages the snapshot: made on top of ``main`` but on no branch, so no reader
    sees it until it is published (write-audit-publish; see ``breaker``). ``decryption`` reads
    the footers of files with encrypted columns, whose column metadata is encrypted too (their
    statistics are off: see :func:`_create`).
    """
    if decryption is None:
        with ThreadPoolExecutor(FOOTER_THREADS) as pool:
            data_files = list(pool.map(lambda path: _data_file(table, path, None), paths))
    else:  # one at a time: pyarrow's KMS calls back into Python, and deadlocks from a pool
        data_files = [_data_file(table, path, decryption) for path in paths]
    if replace_all:
        return replace_files(table, data_files, properties, branch=branch)
    if removed:
        gone = set(removed)
        current = [task.file for task in table.scan().plan_files() if task.file.file_path in gone]
        if len(current) != len(gone):  # another commit replaced one since: this run's view is stale
            raise ValueError(f"{len(gone) - len(current)} of the files to replace are no longer current")
        return replace_files(table, data_files, properties, current, branch=branch)
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=properties, branch=branch).fast_append() as append,
    ):
        for data_file in data_files:
            append.append_data_file(data_file)
    return _made(table, branch, properties)


def replace_files(
    table: Table,
    added: list[DataFile],
    properties: dict[str, str],
    removed: list[DataFile] | None = None,
    branch: str | None = MAIN,
) -> Snapshot:
    """One overwrite snapshot that removes ``removed`` (by default every current file) and adds
    ``added``; on ``branch``, or staged with ``None`` (as :func:`commit_files`)."""
    if removed is None:
        removed = [task.file for task in table.scan().plan_files()] if table.current_snapshot() else []
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=properties, branch=branch).overwrite() as overwrite,
    ):
        for data_file in removed:
            overwrite.delete_data_file(data_file)
        for data_file in added:
            overwrite.append_data_file(data_file)
    return _made(table, branch, properties)


def _made(table: Table, branch: str | None, properties: dict[str, str]) -> Snapshot:
    """The snapshot a commit just made: the branch's head, or the staged one of the run."""
    table = table.refresh()
    made = table.snapshot_by_name(branch) if branch else snapshot_of_run(table, properties[f"{PREFIX}run"])
    assert made is not None
    return made


def _data_file(table: Table, path: str, decryption: Any) -> DataFile:
    """pyiceberg's ``parquet_file_to_data_file``, with the footer read by ``decryption`` if given."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_file_to_data_file,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    if decryption is None:
        return parquet_file_to_data_file(table.io, table.metadata, path)
    input_file = table.io.new_input(path)
    with input_file.open() as stream:
        footer = pq.read_metadata(stream, decryption_properties=decryption)
    schema = table.metadata.schema()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=footer,
        stats_columns=compute_statistics_plan(schema, table.metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=statistics.partition(table.metadata.spec(), schema),
        file_size_in_bytes=len(input_file),
        sort_order_id=None,
        spec_id=table.metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )


def run_record(snapshot: Snapshot) -> RunRecord | None:
    """A snapshot's run record (what commit stored), with its snapshot id and time; None for a
    snapshot no run made."""
    summary = snapshot.summary
    properties = summary.additional_properties if summary else {}
    record = RunRecord.from_properties(properties)
    if record is None:
        return None
    return replace(
        record,
        snapshot_id=snapshot.snapshot_id,
        operation=summary.operation.value if summary else None,
        committed_at=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC).isoformat(),
        files=int(properties.get("added-data-files", 0)),
        bytes_stored=int(properties.get("added-files-size", 0)),
    )


def history(table: Table | None, limit: int = HISTORY_KEPT) -> list[RunRecord]:
    """Run records, oldest first: those whose snapshots expired (kept by ``maintenance.expire``),
    then the current lineage's. The monitor's and the page's history."""
    if table is None or table.current_snapshot() is None:
        return []
    records = [record for s in lineage(table) if (record := run_record(s)) is not None][::-1]
    expired = [RunRecord.from_json(r) for r in json.loads(table.properties.get(EXPIRED_RUNS, "[]"))]
    return (expired + records)[-limit:]


def create_catalog_database(metadata_db_url: str) -> None:
    """On Postgres, ``iceberg_default``'s database beside Airflow's (made by ``airflow-init``);
    then the catalog's own tables and our namespace. Safe to repeat."""
    from airflow.sdk import BaseHook
    from sqlalchemy import create_engine, text

    conn = BaseHook.get_connection(CONN_ID)
    if conn.conn_type == "postgres" and conn.schema:
        engine = create_engine(metadata_db_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as db:
            found = db.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": conn.schema}
            ).first()
            if not found:
                db.execute(text(f'CREATE DATABASE "{conn.schema}"'))
        engine.dispose()
    catalog().create_namespace_if_not_exists(NAMESPACE)


if __name__ == "__main__":
    import os

    create_catalog_database(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    print(f"catalog {CONN_ID}: namespace {NAMESPACE} ready")

"""What a derived run reads and writes: its inputs' snapshots as Arrow datasets, its result as one file.

Shared by pipeline_management's SQL transforms and data_streaming's operators, so neither
imports the other.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

from base_platform.files import Location
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import Pipeline

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyiceberg.table import Table

RESULT_FILE = "result.parquet"


class DeriveError(ValueError):
    """A derived run that cannot be made from its inputs as they are; retrying does not help."""


def snapshots_to_read(pipeline: Pipeline, triggered: dict[str, int]) -> dict[str, int]:
    """Per input: the snapshot its newest triggering event named, else its current one."""
    chosen: dict[str, int] = {}
    for name in pipeline.spec.inputs:
        table = tables.load(name)
        if table is None:
            raise DeriveError(f"{pipeline.spec.name}: input {name} has no table yet")
        try:
            chosen[name] = tables.existing_snapshot(table, triggered.get(name))
        except tables.NoSnapshot as exc:
            raise DeriveError(f"{pipeline.spec.name}: input {name} has {exc}") from exc
    return chosen


def snapshot_dataset(table: Table, snapshot_id: int) -> ds.Dataset:
    """The snapshot's data files as a pyarrow dataset with the snapshot's schema (a column a later
    contract added reads as null in older files)."""
    files = [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]
    return files_dataset(table, snapshot_id, files)


def files_dataset(table: Table, snapshot_id: int, files: list[str]) -> ds.Dataset:
    """Some of the snapshot's data files (what it appended, say) as a pyarrow dataset, in its schema."""
    import pyarrow.dataset as ds
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    snapshot = table.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    schema = table.schemas()[snapshot.schema_id] if snapshot.schema_id is not None else table.schema()
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    paths = [path.removeprefix("s3://") for path in files]
    return ds.dataset(paths, schema=arrow, format="parquet", filesystem=Location.of(table.location()).fs)


def folder_name(snapshots: dict[str, int]) -> str:
    """The result's folder: one per set of input snapshots."""
    return "__".join(f"{name}-{snapshot_id}" for name, snapshot_id in sorted(snapshots.items()))


def write_result(result: pa.Table, source_uri: str, snapshots: dict[str, int]) -> str:
    """The result as one Parquet file under ``<source>/<snapshots>/`` (atomically); returns the folder."""
    import pyarrow.parquet as pq

    location = Location.of(source_uri)
    folder = folder_name(snapshots)
    sink = io.BytesIO()
    # the snapshots in the file's metadata too: new input snapshots are a new input even when
    # the result is the same, so the dataset's lineage always names what it was computed from
    lineage = {"base.lineage": json.dumps(snapshots, sort_keys=True)}
    pq.write_table(result.replace_schema_metadata(lineage), sink, compression="zstd")
    if not location.exists(folder, RESULT_FILE):
        location.write_atomically(sink.getvalue(), folder, RESULT_FILE)
    return location.uri(folder)

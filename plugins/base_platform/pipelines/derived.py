"""pipeline_management's derived pipelines: a dataset computed by SQL over other datasets' snapshots.

A spec with ``inputs:`` and ``transform:`` has no files of its own. Its DAG is scheduled on the
inputs' Assets, and ``derive`` reads exactly the snapshots the triggering events name (an input
no event names: its current snapshot). DataFusion runs the SQL over those snapshots' data files
(each input is a table of that name, scanned through a pyarrow dataset, so only the columns the
SQL uses are read), and the result, sorted by the contract's key, is written as one Parquet file
in a folder named by the snapshots. From there the run is any pipeline's: the contract, quality
and security stages, a commit that replaces the dataset (the result is the whole of it), the
audit and the circuit breaker. The commit records the input snapshots as the run's ``lineage``.

The same snapshots make the same bytes, so a retried or repeated run finds its file committed and
adds nothing; other snapshots make another file, even with the same result, so the lineage is right.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from base_platform.files import Location
from base_platform.pipelines import tables
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


def compute(pipeline: Pipeline, snapshots: dict[str, int]) -> pa.Table:
    """The transform's result over these snapshots, its columns the contract's, sorted by its key."""
    import datafusion

    context = datafusion.SessionContext()
    for name, snapshot_id in snapshots.items():
        table = tables.load(name)
        assert table is not None, "snapshots_to_read found it"
        context.register_dataset(name, snapshot_dataset(table, snapshot_id))
    try:
        result = context.sql(pipeline.spec.transform or "").to_arrow_table()
    except Exception as exc:  # DataFusion raises its own exceptions for a bad query
        raise DeriveError(f"{pipeline.spec.name}: the transform failed: {exc}") from exc
    wanted = list(pipeline.contract.names)
    missing, extra = set(wanted) - set(result.column_names), set(result.column_names) - set(wanted)
    if missing or extra:
        raise DeriveError(
            f"{pipeline.spec.name}: the transform's columns do not match contract "
            f"{pipeline.contract.name} (missing {sorted(missing)}, extra {sorted(extra)})"
        )
    keys = [(column, "ascending") for column in pipeline.contract.primary_key]
    return result.select(wanted).sort_by(keys)


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


def derive(pipeline: Pipeline, source_uri: str, triggered: dict[str, int]) -> dict[str, Any]:
    """``derive``: which snapshots, the result computed and written; what discover and commit need
    (the result replaces the dataset; stream operators append, see ``operators``)."""
    if pipeline.spec.operators:
        from base_platform.pipelines import operators

        return operators.derive(pipeline, source_uri, triggered)
    snapshots = snapshots_to_read(pipeline, triggered)
    result = compute(pipeline, snapshots)
    return {
        "folder": write_result(result, source_uri, snapshots),
        "lineage": {name: str(snapshot_id) for name, snapshot_id in snapshots.items()},
        "rows": result.num_rows,
        "replace": True,
        "position": None,
    }

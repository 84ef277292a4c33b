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

from typing import TYPE_CHECKING

from base_platform.pipelines.data_storage import derive_io, tables
from base_platform.pipelines.run_records import DeriveResult
from base_platform.pipelines.spec import Pipeline

if TYPE_CHECKING:
    import pyarrow as pa


def compute(pipeline: Pipeline, snapshots: dict[str, int]) -> pa.Table:
    """The transform's result over these snapshots, its columns the contract's, sorted by its key."""
    import datafusion

    context = datafusion.SessionContext()
    for name, snapshot_id in snapshots.items():
        table = tables.load(name)
        assert table is not None, "snapshots_to_read found it"
        context.register_dataset(name, derive_io.snapshot_dataset(table, snapshot_id))
    try:
        result = context.sql(pipeline.spec.transform or "").to_arrow_table()
    except Exception as exc:  # DataFusion raises its own exceptions for a bad query
        raise derive_io.DeriveError(f"{pipeline.spec.name}: the transform failed: {exc}") from exc
    wanted = list(pipeline.contract.names)
    missing, extra = set(wanted) - set(result.column_names), set(result.column_names) - set(wanted)
    if missing or extra:
        raise derive_io.DeriveError(
            f"{pipeline.spec.name}: the transform's columns do not match contract "
            f"{pipeline.contract.name} (missing {sorted(missing)}, extra {sorted(extra)})"
        )
    keys = [(column, "ascending") for column in pipeline.contract.primary_key]
    return result.select(wanted).sort_by(keys)


def derive(pipeline: Pipeline, source_uri: str, triggered: dict[str, int]) -> DeriveResult:
    """``derive``: which snapshots, the result computed and written; what discover and commit need
    (the result replaces the dataset; stream operators append, see ``stream_transforms``)."""
    if pipeline.spec.operators:
        from base_platform.pipelines.data_streaming import stream_transforms

        return stream_transforms.derive_appended(pipeline, source_uri, triggered)
    snapshots = derive_io.snapshots_to_read(pipeline, triggered)
    result = compute(pipeline, snapshots)
    return DeriveResult(
        folder=derive_io.write_result(result, source_uri, snapshots),
        lineage={name: str(snapshot_id) for name, snapshot_id in snapshots.items()},
        rows=result.num_rows,
        replace=True,
    )

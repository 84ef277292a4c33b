"""Metadata discovery: the registry entry of a dataset (its table, schema, classes, partitions, lineage).

The tracker's half is ``history``: every snapshot of the table's lineage with the DAG run that
made it, so a snapshot leads to its run and a run (its commit's XCom) to its snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline

if TYPE_CHECKING:
    from pyiceberg.table import Table


def registry_entry(pipeline: Pipeline, table: Table, history: list[RunRecord]) -> dict[str, Any]:
    spec = pipeline.spec
    protections = spec.security.columns
    return {
        "dataset": spec.name,
        "description": spec.description,
        "table": ".".join(table.name()),
        "location": table.location(),
        "metadata": table.metadata_location,
        "format": "iceberg",
        "partition_spec": [
            f"{field.transform}({field.source_id}) as {field.name}" for field in table.spec().fields
        ],
        "contract": {"name": pipeline.contract.name, "version": pipeline.contract.version},
        "columns": [
            {
                "name": field.name,
                "type": str(field.field_type),
                "nullable": not field.required,
                "classification": protections[field.name].classification
                if field.name in protections
                else "public",
                "protection": protections[field.name].protect if field.name in protections else "none",
            }
            for field in table.schema().fields
        ],
        "current_snapshot": history[-1].snapshot_id if history else None,
        "history": [
            {
                "snapshot_id": record.snapshot_id,
                "committed_at": record.committed_at,
                "operation": record.operation,
                "run": record.run,
                "dag_run": record.dag_run,
                "rows_stored": record.rows_stored,
                "files": record.files,
            }
            for record in history
        ],
        "lineage": {
            "inputs": sorted({i["source"] for record in history for i in record.inputs}),
            "output": ".".join(table.name()),
        },
    }

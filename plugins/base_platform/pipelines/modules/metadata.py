"""Metadata discovery: the registry entry of a dataset (schema, classes, partitions, last commit, lineage)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from base_platform.pipelines.spec import Pipeline


def registry_entry(
    pipeline: Pipeline, schema: pa.Schema, manifest: dict[str, Any], location: str
) -> dict[str, Any]:
    spec = pipeline.spec
    protections = spec.security.columns
    return {
        "dataset": spec.name,
        "description": spec.description,
        "location": location,
        "format": "parquet",
        "compression": spec.storage.compression,
        "partition_by": list(spec.storage.partition_by),
        "contract": {"name": manifest["contract"]["name"], "version": manifest["contract"]["version"]},
        "columns": [
            {
                "name": field.name,
                "type": str(field.type),
                "nullable": field.nullable,
                "classification": protections[field.name].classification
                if field.name in protections
                else "public",
                "protection": protections[field.name].protect if field.name in protections else "none",
            }
            for field in schema
        ],
        "last_commit": {
            "run": manifest["run"],
            "committed_at": manifest["committed_at"],
            "rows_stored": manifest["rows_stored"],
            "files": len(manifest["files"]),
        },
        "lineage": {"inputs": [i["source"] for i in manifest["inputs"]], "output": location},
    }

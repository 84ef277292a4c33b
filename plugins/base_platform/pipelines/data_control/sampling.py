"""Samples and train/validation/test splits of a dataset for ML, each an Iceberg table of its own.

A row's fate depends only on its primary key: the key's 64-bit fingerprint (the first 8 bytes
of a SHA-256, :func:`hashing.fingerprints`) read as a position in [0, 1). A P percent sample keeps
the positions below P/100, so it is the same rows on every run and only gains rows as the data
grows; an N-row sample keeps the N lowest positions; a split cuts the same line into three, so a
key never changes split. A model trained on ``train`` is never scored on its own rows.

The tables live beside the dataset (``<dataset>__sample``, ``<dataset>__train`` ...), and each
snapshot names the source table and snapshot it was cut from, with the request. A request
repeated on the same source snapshot adds nothing.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_control.form_params import SIZE, SPLIT_CHOICES, SPLITS
from base_platform.pipelines.data_security import hashing
from base_platform.pipelines.data_storage import tables

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from base_platform.pipelines.spec import Pipeline

FULL = float(2**64)
SOURCE = f"{tables.PREFIX}source"  # snapshot property: "<table>@<snapshot id>" it was cut from
REQUEST = f"{tables.PREFIX}request"  # snapshot property: what was asked (size, or the split)


def parse_size(text: str) -> tuple[int | None, float | None]:
    """``"1000"`` (rows) or ``"5%"`` / ``"0.5%"`` (percent)."""
    match = SIZE.match(text.strip())
    if not match:
        raise table_actions.ControlError(f"size {text!r}: give a row count (1000) or a percent (5%)")
    return (int(match["rows"]), None) if match["rows"] else (None, float(match["percent"]))


def sample(pipeline: Pipeline, size: str, dag_run: str = "") -> dict[str, Any]:
    """Write ``<dataset>__sample``: N rows or P percent of the current snapshot, by key hash."""
    source = _source(pipeline)
    rows, percent = parse_size(size)
    key = list(pipeline.contract.primary_key)
    cut: np.uint64 | None
    if percent is not None:
        cut = np.uint64(min(int(percent / 100 * FULL), 2**64 - 1))
    else:
        positions = np.concatenate(
            [_positions(batch, key) for batch in _batches(source, key)] or [np.empty(0, np.uint64)]
        )
        cut = np.partition(positions, rows - 1)[rows - 1] if rows and rows <= len(positions) else None
    request = {"size": size}

    def keep(batch: pa.RecordBatch) -> dict[str, pa.RecordBatch]:
        if cut is None:
            return {"sample": batch}
        return {"sample": batch.filter(_positions(batch, key) <= cut)}

    return _write(pipeline, source, request, ("sample",), keep, dag_run)["sample"]


def split(pipeline: Pipeline, fractions: str, dag_run: str = "") -> dict[str, Any]:
    """Write ``<dataset>__train``, ``__validation`` and ``__test`` by key hash, in percent."""
    if fractions not in SPLIT_CHOICES:
        raise table_actions.ControlError(f"split {fractions!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    train, validation, _ = (int(part) for part in fractions.split("/"))
    cuts = np.array([train / 100 * FULL, (train + validation) / 100 * FULL], dtype=np.float64)
    key = list(pipeline.contract.primary_key)
    source = _source(pipeline)

    def assign(batch: pa.RecordBatch) -> dict[str, pa.RecordBatch]:
        which = np.searchsorted(cuts, _positions(batch, key).astype(np.float64), side="right")
        return {name: batch.filter(which == index) for index, name in enumerate(SPLITS)}

    return _write(pipeline, source, {"split": fractions}, SPLITS, assign, dag_run)


def _source(pipeline: Pipeline) -> Table:
    if pipeline.spec.security.encrypted:
        raise table_actions.ControlError(
            f"dataset {pipeline.spec.name!r} has encrypted columns, which only the engine can read"
        )
    source = table_actions.dataset_table(pipeline.spec.name)
    if source.current_snapshot() is None:
        raise table_actions.ControlError(f"dataset {pipeline.spec.name!r} has no snapshot yet")
    return source


def _batches(source: Table, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    scan = source.scan(selected_fields=tuple(columns) if columns else ("*",))
    yield from scan.to_arrow_batch_reader()


def _positions(batch: pa.RecordBatch, key: list[str]) -> np.ndarray:
    return hashing.fingerprints({name: batch.column(name) for name in key})


def _write(
    pipeline: Pipeline,
    source: Table,
    request: dict[str, str],
    parts: tuple[str, ...],
    cut: Callable[[pa.RecordBatch], dict[str, pa.RecordBatch]],
    dag_run: str,
) -> dict[str, dict[str, Any]]:
    """One pass over the source, ``cut`` sharing each batch among the parts; each part's table
    replaced in one snapshot, unless it already is this cut of this source snapshot."""
    import pyarrow as pa
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    snapshot = source.current_snapshot()
    assert snapshot is not None
    origin = f"{'.'.join(source.name())}@{snapshot.snapshot_id}"
    properties = {
        SOURCE: origin,
        REQUEST: json.dumps(request, sort_keys=True),
        f"{tables.PREFIX}dag-run": dag_run,
    }
    targets = {part: _target(pipeline, source, part) for part in parts}
    files: dict[str, list[DataFile]] = {
        part: [] for part, table in targets.items() if not _made_by(table, properties)
    }
    if files:
        for batch in _batches(source):
            for part, rows in cut(batch).items():
                if part in files and rows.num_rows:
                    table = targets[part]
                    written = _dataframe_to_data_files(
                        table.metadata, pa.Table.from_batches([rows]), table.io
                    )
                    files[part] += list(written)
    for part, data_files in files.items():
        tables.replace_files(targets[part], data_files, properties)
    return {part: _record(targets[part].refresh(), origin, request) for part in targets}


def _target(pipeline: Pipeline, source: Table, part: str) -> Table:
    """``base.<dataset>__<part>``, beside the dataset's folder, with the source's schema."""
    name = f"{pipeline.spec.name}__{part}"
    found = tables.load(name)
    if found is not None:
        return found
    location = posixpath.join(posixpath.dirname(source.location().rstrip("/")), part)
    made = tables.catalog().create_table(
        tables.identifier(name),
        schema=source.schema(),
        location=location,
        properties={
            "write.parquet.compression-codec": "zstd",
            **{k: v for k, v in source.properties.items() if k.startswith("write.metadata.metrics.column.")},
        },
    )
    return made


def _made_by(table: Table, properties: dict[str, str]) -> bool:
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
    return all(summary.get(k) == properties[k] for k in (SOURCE, REQUEST))


def _record(table: Table, origin: str, request: dict[str, str]) -> dict[str, Any]:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    return {
        "table": ".".join(table.name()),
        "snapshot_id": snapshot.snapshot_id,
        "source": origin,
        "request": request,
        "rows": int(summary.get("total-records", 0)),
        "files": int(summary.get("total-data-files", 0)),
    }

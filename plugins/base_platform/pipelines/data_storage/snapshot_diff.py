"""What one snapshot of a table holds that another lacks, from Iceberg's file lists.

Publishing (what a consumer still needs), stream operators (what an input appended since the
last run) and feature views (which rows to recompute) all ask this one question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.table import FileScanTask, Table


@dataclass(frozen=True)
class Change:
    """What a target receives to go from its published snapshot to ``snapshot_id``."""

    snapshot_id: int
    published: int | None
    tasks: list[FileScanTask]  # files to send, oldest commit first: the appended ones, unless ``whole``
    files: list[FileScanTask]  # every data file of the snapshot
    whole: bool  # the snapshot replaces what the target holds (files left since ``published``)
    partitions: list[str]  # Iceberg partition paths that gained or lost a file


def change(table: Table, snapshot_id: int, published: int | None) -> Change:
    """The files of ``snapshot_id`` a target that holds ``published`` still needs."""
    known = published is not None and table.snapshot_by_id(published) is not None  # not yet expired
    current = {task.file.file_path: task for task in table.scan(snapshot_id=snapshot_id).plan_files()}
    before: dict[str, FileScanTask] = {}
    if known:
        before = {task.file.file_path: task for task in table.scan(snapshot_id=published).plan_files()}
    added = [task for path, task in current.items() if path not in before]
    left = [task for path, task in before.items() if path not in current]
    whole = not known or bool(left)  # then the target must become the snapshot, not grow by it
    moved = added + left if known else list(current.values())
    partitions = sorted({partition_of(table, task) for task in moved})
    order = _sequence_numbers(table, snapshot_id)
    chosen = sorted(current.values() if whole else added, key=lambda task: order[task.file.file_path])
    return Change(snapshot_id, published, chosen, list(current.values()), whole, partitions)


def _sequence_numbers(table: Table, snapshot_id: int) -> dict[str, int]:
    """Data file -> the sequence number of the commit that added it: rows of a later run come later."""
    snapshot = table.snapshot_by_id(snapshot_id)
    assert snapshot is not None
    return {
        entry.data_file.file_path: entry.sequence_number or 0
        for manifest in snapshot.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    }


def partition_of(table: Table, task: FileScanTask) -> str:
    """The file's partition path (``event_time_day=2026-01-02``), under the spec it was written with."""
    return table.specs()[task.file.spec_id].partition_to_path(task.file.partition, table.schema())

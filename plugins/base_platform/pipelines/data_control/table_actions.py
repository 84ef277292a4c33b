"""data_control: what a data owner does with a dataset's table: read it as it was, and roll it
back (``erasure`` erases a data subject).

Both work on the Iceberg snapshots that each pipeline run commits (see ``tables``). A rollback
sets the table's current snapshot back to one of its ancestors, so the runs after it leave the
table (their files stay, for time travel, until snapshots expire) and ``discover`` takes their
inputs again. Iceberg's snapshot log records when; the table property ``base.rollbacks``
records who and why, in the same commit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.data_control.form_params import POINT
from base_platform.pipelines.data_storage import tables

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot


ROLLBACKS_PROPERTY = f"{tables.PREFIX}rollbacks"
ENTRIES_KEPT = 50  # the newest rollbacks a table property keeps (the reports keep all)


class ControlError(ValueError):
    """A request the table cannot satisfy: no such dataset, snapshot or point in time."""


def parse_point(text: str) -> int | datetime:
    """A snapshot id, or an ISO 8601 timestamp that names its zone (a bare one is ambiguous)."""
    if not POINT.match(text):
        raise ControlError(f"{text!r} is neither a snapshot id nor an ISO timestamp")
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:  # the shape of a timestamp, not a real one: month 13, hour 25
        raise ControlError(f"{text!r} is not a real time: {exc}") from exc
    if when.tzinfo is None:
        raise ControlError(f"{text!r} has no time zone: add Z or +hh:mm")
    return when


def dataset_table(name: str, within: SqlCatalog | None = None) -> Table:
    """The dataset's table (``within`` an open catalog, as :func:`tables.load`), or a ControlError."""
    table = tables.load(name, within)
    if table is None:
        raise ControlError(f"dataset {name!r} has no table: no run has committed yet")
    return table


def snapshot_at(table: Table, point: int | datetime) -> Snapshot:
    """The snapshot with that id, or the one that was current at that time."""
    if isinstance(point, int):
        snapshot = table.snapshot_by_id(point)
        if snapshot is None:
            raise ControlError(f"{'.'.join(table.name())} has no snapshot {point}")
        return snapshot
    snapshot = table.snapshot_as_of_timestamp(int(point.timestamp() * 1000))
    if snapshot is None:
        raise ControlError(f"{'.'.join(table.name())} had no snapshot at {point.isoformat()}")
    return snapshot


def read_dataset(
    name: str,
    as_of: int | datetime | None = None,
    columns: tuple[str, ...] | None = None,
    filter: str | BooleanExpression | None = None,
) -> pa.Table:
    """The dataset's rows, now or as of a snapshot id or time; only the ``columns`` and the rows
    ``filter`` keeps (Iceberg's expression syntax, e.g. ``"event_time >= '2026-01-01T00:00:00+00:00'"``).

    A filter on a partition source column prunes whole files before any is opened.
    """
    from pyiceberg.expressions import AlwaysTrue

    table = dataset_table(name)
    snapshot = None if as_of is None else snapshot_at(table, as_of)
    scan = table.scan(
        row_filter=AlwaysTrue() if filter is None else filter,
        selected_fields=columns or ("*",),
        snapshot_id=snapshot.snapshot_id if snapshot else None,
    )
    return scan.to_arrow()


def _files(table: Table, snapshot: Snapshot) -> dict[str, int]:
    """Data file path -> rows, of a snapshot."""
    return {
        task.file.file_path: task.file.record_count
        for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files()
    }


def rollback(name: str, to: int | datetime, *, dry_run: bool, who: str, why: str) -> dict[str, Any]:
    """Set the dataset's current snapshot back to ``to`` (an ancestor); report what leaves.

    ``dry_run`` reports without changing anything. Rolling back to the current snapshot
    changes nothing.
    """
    if not why.strip():
        raise ControlError("a rollback needs a reason")
    table = dataset_table(name)
    current = table.current_snapshot()
    if current is None:
        raise ControlError(f"dataset {name!r} has no snapshot to roll back")
    target = snapshot_at(table, to)
    lineage = list(tables.lineage(table))
    if target.snapshot_id not in {s.snapshot_id for s in lineage}:
        raise ControlError(
            f"snapshot {target.snapshot_id} is not an ancestor of the current one ({current.snapshot_id})"
        )
    now, then = _files(table, current), _files(table, target)
    undone = lineage[: [s.snapshot_id for s in lineage].index(target.snapshot_id)]
    report = {
        "dataset": name,
        "from_snapshot": current.snapshot_id,
        "to_snapshot": target.snapshot_id,
        "dry_run": dry_run,
        "who": who,
        "why": why,
        "at": datetime.now(UTC).isoformat(),
        "runs_leaving": [
            {"snapshot_id": s.snapshot_id, "run": record.run if (record := tables.run_record(s)) else None}
            for s in undone
        ],
        "files_leaving": len(now.keys() - then.keys()),
        "rows_leaving": sum(rows for path, rows in now.items() if path not in then),
        "files_returning": len(then.keys() - now.keys()),
        "rows_returning": sum(rows for path, rows in then.items() if path not in now),
        "rows_after": sum(then.values()),
    }
    if dry_run or target.snapshot_id == current.snapshot_id:
        return report
    from pyiceberg.table.update.snapshot import ManageSnapshots

    entry = {k: report[k] for k in ("from_snapshot", "to_snapshot", "who", "why", "at")}
    kept = json.loads(table.properties.get(ROLLBACKS_PROPERTY, "[]"))
    with table.transaction() as tx:
        with ManageSnapshots(tx) as snapshots:
            snapshots.rollback_to_snapshot(target.snapshot_id)
        tx.set_properties({ROLLBACKS_PROPERTY: json.dumps([*kept, entry][-ENTRIES_KEPT:])})
    return report

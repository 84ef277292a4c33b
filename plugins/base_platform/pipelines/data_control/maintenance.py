"""Keeping a dataset's table small and its history bounded: what ``dataset_maintenance`` runs nightly.

pyiceberg 0.12 expires snapshots in metadata only and has no compaction or orphan clean-up, so
this module does what Iceberg's Java actions do, on pyiceberg's own scan, writer and commits:

- :func:`expire` drops snapshots and then deletes the files only they reached. The list of those
  files is committed with the expiry (``base.pending-deletes``) and cleared once they are gone, so
  a task killed in between finishes the job on its retry instead of leaving orphans.
- :func:`delete_old_rows` deletes whole ``day()`` partitions older than ``retention.data_days``.
- :func:`compact` rewrites a partition's small files into files of ``storage.target_file_mb``.
- :func:`remove_orphans` deletes files under the table that no metadata reaches, once they are
  older than a grace period (a commit in flight has published files it has not committed yet).
  The engine's own folders (``_``: quarantine, staging, key indexes) are not its to judge; an
  expiry deletes the key indexes of the snapshots it expires.
- Side files (``_media/``: thumbnails, resampled series) belong to the snapshots whose rows name
  them (``spec.MEDIA_SIDE_COLUMNS``), read from the data files themselves rather than kept in a
  list of their own that could drift: :func:`expire` deletes, with the data files, those only the
  expired snapshots' rows named (so an erasure's expiry takes the erased rows' thumbnails), and
  :func:`remove_orphans` those no snapshot names once older than the grace period (a run that
  never committed). The grace also covers a run in flight, whose rows no snapshot holds yet: a
  run writes its side files again even where the same content is there, so their time is its.
  Not covered: an expiry of the last snapshot naming a side file while a run in flight reads the
  same content again (that run's row then names a file gone; a re-run writes it back).

Expired snapshots would take their run records with them, so :func:`expire` carries the
inputs' checksums (``tables.EXPIRED_INPUTS``: ``discover`` still skips those inputs) and the
newest run records (``tables.EXPIRED_RUNS``: the monitor and the page keep their history) over
into the table's properties.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from base_platform.files import Location
from base_platform.pipelines.data_quality import table_keys
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.multimodal_processing.media_kinds import SIDE_FOLDER
from base_platform.pipelines.spec import MEDIA_SIDE_COLUMNS

if TYPE_CHECKING:
    from pyiceberg.table import FileScanTask, Table
    from pyiceberg.table.snapshots import Snapshot

    from base_platform.pipelines.spec import Pipeline

PENDING_DELETES = f"{tables.PREFIX}pending-deletes"
MAINTENANCE = f"{tables.PREFIX}maintenance"  # snapshot property: which maintenance step made it
ORPHAN_GRACE = timedelta(days=3)  # Iceberg's default: older than any commit still in flight
SMALL_FILE = 0.75  # of the target size, as Iceberg's rewrite_data_files: smaller files are compacted


class Reach:
    """What each snapshot reaches: its manifest list, manifests and live data files (cached per manifest)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._manifests: dict[str, set[str]] = {}

    def data_files(self, snapshot: Snapshot) -> set[str]:
        files: set[str] = set()
        for manifest in snapshot.manifests(self.table.io):
            files |= self._entries(manifest)
        return files

    def files(self, snapshot: Snapshot) -> set[str]:
        manifests = snapshot.manifests(self.table.io)
        files = {snapshot.manifest_list, *(m.manifest_path for m in manifests)}
        for manifest in manifests:
            files |= self._entries(manifest)
        return files

    def _entries(self, manifest: Any) -> set[str]:
        if manifest.manifest_path not in self._manifests:
            entries = manifest.fetch_manifest_entry(self.table.io, discard_deleted=True)
            self._manifests[manifest.manifest_path] = {e.data_file.file_path for e in entries}
        return self._manifests[manifest.manifest_path]


def expire(table: Table, snapshot_ids: Iterable[int]) -> dict[str, Any]:
    """Expire these snapshots (never the head of a branch: ``main``'s current one, or an audit a
    breaker holds) and delete the files only they reached."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    doomed = set(snapshot_ids) - {ref.snapshot_id for ref in table.metadata.refs.values()}
    if not doomed:
        return {"snapshots_expired": [], **finish_deletes(table)}
    reach = Reach(table)
    kept = [s for s in table.snapshots() if s.snapshot_id not in doomed]
    kept_files = set().union(*(reach.files(s) for s in kept))
    gone = set().union(*(reach.files(s) for s in table.snapshots() if s.snapshot_id in doomed)) - kept_files
    kept_data = set().union(*(reach.data_files(s) for s in kept))
    doomed_data = set().union(*(reach.data_files(s) for s in table.snapshots() if s.snapshot_id in doomed))
    gone |= _side_files_only_in(table, doomed_data - kept_data, kept_data)
    kept_runs = {record.run for s in kept if (record := tables.run_record(s)) is not None}
    carried = {sha: run for sha, run in tables.committed_inputs(table).items() if run not in kept_runs}
    # the monitor's history stays
    runs = [r.to_json() for r in tables.history(table) if r.run not in kept_runs]
    runs = [{k: v for k, v in r.items() if k != "inputs"} for r in runs]  # a lookback reads their quarantine
    pending = json.loads(table.properties.get(PENDING_DELETES, "[]"))
    position = tables.committed_position(table)  # the source's, whose run snapshots may go now
    with table.transaction() as tx:
        with ExpireSnapshots(tx) as expiry:
            expiry.by_ids(sorted(doomed))
        tx.set_properties(
            {
                PENDING_DELETES: json.dumps(sorted(set(pending) | gone)),
                tables.EXPIRED_INPUTS: json.dumps(carried, sort_keys=True),
                tables.EXPIRED_RUNS: json.dumps(runs[-tables.HISTORY_KEPT :], sort_keys=True),
                **({tables.EXPIRED_POSITION: json.dumps(position)} if position is not None else {}),
            }
        )
    indexes = table_keys.prune(
        Location.of(table.location()), [s.snapshot_id for s in table.refresh().snapshots()]
    )
    return {"snapshots_expired": sorted(doomed), "key_indexes_deleted": indexes, **finish_deletes(table)}


def side_files(table: Table, data_files: Iterable[str]) -> set[str] | None:
    """The side files the rows of these data files name, as paths under the table; None when a
    file's side columns cannot be read (encrypted, say): then nothing is deleted on a guess."""
    import pyarrow.parquet as pq

    wanted = [name for name in MEDIA_SIDE_COLUMNS if name in table.schema().column_names]
    root = table.location().rstrip("/")
    named: set[str] = set()
    for uri in data_files if wanted else ():
        folder, name = uri.rsplit("/", 1)
        location = Location.of(folder)
        try:
            with location.fs.open_input_file(location.path(name)) as source:
                file = pq.ParquetFile(source)
                present = [column for column in wanted if column in file.schema_arrow.names]
                values = file.read(columns=present)
        except (OSError, ValueError):
            return None
        for column in present:
            named |= {
                f"{root}/{value}" for value in values.column(column).unique().to_pylist() if _side(value)
            }
    return named


def _side(value: Any) -> bool:
    """Whether a row's value names a side file: ``_media/<name>``, as ``side_writer`` makes it."""
    folder, _, name = value.partition("/") if isinstance(value, str) else ("", "", "")
    return folder == SIDE_FOLDER and name not in ("", ".", "..") and "/" not in name


def _side_files_only_in(table: Table, gone: set[str], kept: set[str]) -> set[str]:
    """The side files the rows of the ``gone`` files name and no ``kept`` file's rows do."""
    named = side_files(table, gone)
    still = side_files(table, kept) if named else None
    return named - still if named and still is not None else set()


def finish_deletes(table: Table) -> dict[str, int]:
    """Delete the files an expiry committed as gone, then clear the list (safe to repeat)."""
    pending = json.loads(table.properties.get(PENDING_DELETES, "[]"))
    if not pending:
        return {"files_deleted": 0, "bytes_deleted": 0}
    deleted = freed = 0
    for path in pending:
        try:
            size = len(table.io.new_input(path))
        except FileNotFoundError:
            continue  # deleted before a crash: this is the retry
        table.io.delete(path)
        deleted, freed = deleted + 1, freed + size
    with table.transaction() as tx:
        tx.remove_properties(PENDING_DELETES)
    table.refresh()
    return {"files_deleted": deleted, "bytes_deleted": freed}


def expire_older_than(table: Table, days: int, now: datetime) -> dict[str, Any]:
    """Expire the snapshots older than ``days``; the current one always stays."""
    cutoff_ms = int((now - timedelta(days=days)).timestamp() * 1000)
    return expire(table, [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms])


def delete_old_rows(table: Table, pipeline: Pipeline, now: datetime) -> dict[str, Any]:
    """Delete the rows of the days before ``retention.data_days``: whole files, as partitions are days."""
    from pyiceberg.expressions import LessThan

    days = pipeline.spec.retention.data_days
    partition = next((p for p in pipeline.spec.storage.partitions if p.transform == "day"), None)
    if not days or partition is None or table.current_snapshot() is None:
        return {"rows_deleted": 0, "before": None}
    cutoff = datetime.combine((now - timedelta(days=days)).date(), datetime.min.time(), UTC)
    old = LessThan(term=partition.column, value=cutoff.isoformat())
    rows = sum(task.file.record_count for task in table.scan(row_filter=old).plan_files())
    if rows:
        table.delete(old, snapshot_properties={MAINTENANCE: "retention"})
    return {"rows_deleted": rows, "before": cutoff.isoformat()}


def compact(table: Table, pipeline: Pipeline) -> dict[str, Any]:
    """Rewrite each partition's small files into files of about ``storage.target_file_mb``, in one snapshot.

    Files with encrypted columns are left alone: rewriting them needs the engine's encrypting
    writer, which pyiceberg's is not.
    """
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    if pipeline.spec.security.encrypted:
        return {"files_before": 0, "files_after": 0, "skipped": "encrypted columns"}
    if table.current_snapshot() is None:
        return {"files_before": 0, "files_after": 0}
    target = pipeline.spec.storage.target_file_mb << 20
    groups: dict[tuple[int, str], list[FileScanTask]] = {}
    for task in table.scan().plan_files():
        if task.file.file_size_in_bytes < target * SMALL_FILE and not task.delete_files:
            key = (task.file.spec_id, repr(task.file.partition))
            groups.setdefault(key, []).append(task)
    bins = [chunk for group in groups.values() for chunk in _bins(group, target) if len(chunk) > 1]
    if not bins:
        return {"files_before": 0, "files_after": 0}
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    removed, added = [], []
    for chunk in bins:
        rows = scan.to_table(chunk)
        removed += [task.file for task in chunk]
        added += list(_dataframe_to_data_files(table.metadata, rows, table.io))
    tables.replace_files(table, added, {MAINTENANCE: "compaction"}, removed)
    return {"files_before": len(removed), "files_after": len(added)}


def _bins(tasks: list[FileScanTask], target: int) -> list[list[FileScanTask]]:
    """Consecutive small files, each bin up to about the target size."""
    bins: list[list[FileScanTask]] = [[]]
    size = 0
    for task in sorted(tasks, key=lambda t: t.file.file_path):
        if bins[-1] and size + task.file.file_size_in_bytes > target:
            bins.append([])
            size = 0
        bins[-1].append(task)
        size += task.file.file_size_in_bytes
    return bins


def remove_orphans(table: Table, now: datetime, grace: timedelta = ORPHAN_GRACE) -> dict[str, int]:
    """Delete files under the table's location that no metadata reaches and that are older than ``grace``.

    Folders whose name starts with ``_`` are the engine's (staging, quarantine) and are left alone.
    """
    from pyarrow.fs import FileSelector, FileType

    reach = Reach(table)
    referenced = {table.metadata_location, *(entry.metadata_file for entry in table.metadata.metadata_log)}
    for snapshot in table.snapshots():
        referenced |= reach.files(snapshot)
    known = {_bare(path) for path in referenced}
    location = Location.of(table.location())
    root = location.path().rstrip("/")
    cutoff = now - grace
    removed = freed = 0
    for info in location.fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True)):
        relative = info.path[len(root) + 1 :]
        if info.type != FileType.File or any(part.startswith("_") for part in relative.split("/")):
            continue
        if _bare(info.path) in known or info.mtime is None or info.mtime >= cutoff:
            continue
        location.fs.delete_file(info.path)
        removed, freed = removed + 1, freed + (info.size or 0)
    return {
        "orphans_deleted": removed,
        "orphan_bytes_deleted": freed,
        **_remove_side_orphans(table, reach, cutoff),
    }


def _remove_side_orphans(table: Table, reach: Reach, cutoff: datetime) -> dict[str, int]:
    """Delete the side files written before ``cutoff`` that no snapshot's rows name: a run's that
    never committed, or one whose rows left before expiry took side files with it."""
    from pyarrow.fs import FileSelector, FileType

    location = Location.of(table.location())
    listed = location.fs.get_file_info(FileSelector(location.path(SIDE_FOLDER), allow_not_found=True))
    old = [i for i in listed if i.type == FileType.File and i.mtime is not None and i.mtime < cutoff]
    named = side_files(table, set().union(*(reach.data_files(s) for s in table.snapshots()))) if old else None
    if named is None:
        return {"side_files_deleted": 0}
    known = {_bare(path) for path in named}
    unnamed = [info for info in old if _bare(info.path) not in known]
    for info in unnamed:
        location.fs.delete_file(info.path)
    return {"side_files_deleted": len(unnamed)}


def _bare(path: str) -> str:
    """A path without its scheme, as pyarrow's file systems list them."""
    for scheme in ("file://", "s3://", "s3a://"):
        if path.startswith(scheme):
            return path[len(scheme) :]
    return path


def maintain(pipeline: Pipeline, now: datetime, grace: timedelta = ORPHAN_GRACE) -> dict[str, Any]:
    """The nightly round for one dataset, in the order that frees the most: retention, compaction,
    then expiry (which deletes what the first two replaced), then orphans."""
    table = tables.load(pipeline.spec.name)
    if table is None:
        return {"dataset": pipeline.spec.name, "table": None}
    report: dict[str, Any] = {"dataset": pipeline.spec.name, "table": tables.identifier(pipeline.spec.name)}
    report |= finish_deletes(table)
    report["retention"] = delete_old_rows(table, pipeline, now)
    report["compaction"] = compact(table.refresh(), pipeline)
    report["expiry"] = expire_older_than(table.refresh(), pipeline.spec.retention.snapshots_days, now)
    report["orphans"] = remove_orphans(table.refresh(), now, grace)
    current = table.refresh().current_snapshot()
    report["snapshot_id"] = current.snapshot_id if current else None
    report["snapshots_kept"] = len(table.snapshots())
    return report

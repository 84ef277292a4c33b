"""Key fingerprint files: sorted 64-bit fingerprints, a run part's or a whole table snapshot's.

``commit`` checks a run's keys against the keys already on ``main`` without scanning the
table: each snapshot the engine commits gets an index of every primary key it holds
(``_keys/<snapshot id>/<columns>.u64``), the previous index merged with the run's stored keys,
a bucket range at a time. A snapshot without one (made before this index, or by an erasure,
a rollback's target, maintenance) gets it from a scan of its files' key columns, once.

A fingerprint is the first 8 bytes of a SHA-256: among a billion keys, two distinct ones
share one with a chance of 3%, and the later is then quarantined as repeated, never lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from base_platform.files import Location, read_file
from base_platform.pipelines.data_quality import quality_rules

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

    from base_platform.pipelines.spec import Unique

KEY_BUCKETS = 256  # key fingerprint files are indexed by their top byte
KEYS_AT_ONCE = 8 << 20  # fingerprints a shard or the run-wide check holds at once (64 MB), whatever the size
INDEX_FOLDER = "_keys"
SUPPRESSED = f"{INDEX_FOLDER}/suppressed.u64"  # tokens of erased subjects (``hashing.digest_tokens``)
READ_THREADS = 4  # key columns read at once (Parquet decoding releases the GIL)


def bucket_offsets(keys: np.ndarray) -> np.ndarray:
    """Where each top-byte bucket of sorted ``keys`` starts, and the total at the end."""
    starts = np.searchsorted(keys, np.arange(KEY_BUCKETS, dtype=np.uint64) << np.uint64(56))
    return np.append(starts, len(keys)).astype(np.int64)


def write_keys(location: Location, path: str, keys: np.ndarray) -> None:
    """Sorted 64-bit key fingerprints, after a table of where each top-byte bucket starts.

    The table lets a reader take any range of buckets with one ranged read (also on S3), so no
    check ever has to hold every key of a run, or of a table, at once.
    """
    write_key_ranges(location, path, bucket_offsets(keys), iter([keys]))


def write_key_ranges(
    location: Location, path: str, offsets: np.ndarray, ranges: Iterator[np.ndarray]
) -> None:
    """A key file from its bucket offsets and its sorted keys in consecutive pieces; written
    beside its name and renamed, so a reader finds a whole file or none."""
    folder, name = location.path(path).rsplit("/", 1)
    location.fs.create_dir(folder, recursive=True)
    partial = f"{folder}/.{name}.partial"
    written = 0
    with location.fs.open_output_stream(partial) as stream:
        stream.write(offsets.astype("<u8").tobytes())
        for keys in ranges:
            stream.write(keys.astype("<u8").tobytes())
            written += len(keys)
    if written != int(offsets[-1]):
        location.fs.delete_file(partial)
        raise ValueError(f"{path}: {written} keys written, {int(offsets[-1])} expected")
    location.fs.move(partial, location.path(path))


def read_key_offsets(location: Location, path: str) -> np.ndarray:
    """Where each bucket of a :func:`write_keys` file starts, in keys, and the total at the end."""
    with location.fs.open_input_file(location.path(path)) as source:
        return np.frombuffer(source.read_at(8 * (KEY_BUCKETS + 1), 0), dtype="<u8").astype(np.int64)


def read_keys(location: Location, path: str, start: int, stop: int) -> np.ndarray:
    """Keys ``start`` to ``stop`` (positions from :func:`read_key_offsets`) of a :func:`write_keys` file."""
    with location.fs.open_input_file(location.path(path)) as source:
        data = source.read_at(8 * (stop - start), 8 * (KEY_BUCKETS + 1 + start))
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def contains(location: Location, path: str, fingerprints: np.ndarray) -> np.ndarray:
    """Which fingerprints a key file holds, reading only the buckets they fall in."""
    found = np.zeros(len(fingerprints), dtype=bool)
    if not len(fingerprints):
        return found
    offsets = read_key_offsets(location, path)
    buckets = (fingerprints >> np.uint64(56)).astype(np.int64)
    for bucket in np.unique(buckets).tolist():
        rows = buckets == bucket
        stored = read_keys(location, path, int(offsets[bucket]), int(offsets[bucket + 1]))
        found[rows] = quality_rules.members(fingerprints[rows], stored)
    return found


def bucket_groups(counts: np.ndarray) -> Iterator[tuple[int, int]]:
    """Runs of consecutive buckets holding at most KEYS_AT_ONCE keys together (or one bucket)."""
    first, held = 0, 0
    for bucket, count in enumerate(counts.tolist()):
        if held and held + count > KEYS_AT_ONCE:
            yield first, bucket
            first, held = bucket, 0
        held += count
    yield first, len(counts)


def index_file(snapshot_id: int, rule: Unique, kind: str = "") -> str:
    """A snapshot's key file: its index, or (``kind="quarantined"``) the keys a lookback window's
    runs quarantined, kept beside it so the expiry that prunes the one prunes the other."""
    return f"{INDEX_FOLDER}/{snapshot_id}/{'+'.join(rule.columns)}{'.' + kind if kind else ''}.u64"


def table_index(table: Table, target: Location, rule: Unique, decryption: Any = None) -> str | None:
    """The index of the keys on ``main`` (None for a table without rows), made from a scan if it
    has none yet."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    path = index_file(snapshot.snapshot_id, rule)
    if not target.exists(path):
        write_keys(target, path, _scanned_keys(table, snapshot, rule, decryption))
    return path


def index_snapshot(
    table: Table,
    target: Location,
    snapshot: Snapshot,
    rule: Unique,
    new_keys: np.ndarray | None,
    added: list[str],
    replaced_all: bool,
    decryption: Any = None,
) -> None:
    """The index of a snapshot the engine just made: its parent's with ``new_keys``, the sorted
    keys of the rows it added, which the commit checked are new (None: read from the ``added``
    files); a scan where there is no parent index to extend."""
    path = index_file(snapshot.snapshot_id, rule)
    if target.exists(path):
        return
    parent = index_file(snapshot.parent_snapshot_id, rule) if snapshot.parent_snapshot_id else None
    if parent is not None and not replaced_all and not target.exists(parent):
        write_keys(target, path, _scanned_keys(table, snapshot, rule, decryption))
        return
    new = _file_keys(added, rule, decryption) if new_keys is None else new_keys
    if parent is None or replaced_all:
        write_keys(target, path, new)
    else:
        write_merged(target, path, parent, new)


def write_merged(target: Location, path: str, old: str, new: np.ndarray) -> None:
    """``old``'s keys and the sorted ``new`` ones, distinct from them, a bucket range at a time."""
    old_offsets = read_key_offsets(target, old)
    new_offsets = bucket_offsets(new)

    def ranges() -> Iterator[np.ndarray]:
        for first, end in bucket_groups(np.diff(old_offsets)):
            stored = read_keys(target, old, int(old_offsets[first]), int(old_offsets[end]))
            yield quality_rules.merge_sorted(stored, new[new_offsets[first] : new_offsets[end]])

    write_key_ranges(target, path, old_offsets + new_offsets, ranges())


def prune(target: Location, live_snapshots: Iterable[int]) -> int:
    """Delete the indexes of snapshots the table no longer has; returns how many."""
    import pyarrow.fs as pafs

    live = {str(snapshot_id) for snapshot_id in live_snapshots}
    found = target.fs.get_file_info(pafs.FileSelector(target.path(INDEX_FOLDER), allow_not_found=True))
    gone = [
        info.path for info in found if info.type == pafs.FileType.Directory and info.base_name not in live
    ]
    for folder in gone:
        target.fs.delete_dir(folder)
    return len(gone)


def suppressed(target: Location) -> np.ndarray:
    """The sorted tokens of the subjects erased from the dataset: ingest drops their rows."""
    if not target.exists(SUPPRESSED):
        return np.empty(0, np.uint64)
    return read_keys(target, SUPPRESSED, 0, int(read_key_offsets(target, SUPPRESSED)[-1]))


def suppress(target: Location, tokens: np.ndarray) -> None:
    """Add erased subjects' tokens to the dataset's suppression list (each once)."""
    known = suppressed(target)
    both = np.union1d(known, tokens.astype(np.uint64))
    if len(both) != len(known):
        write_keys(target, SUPPRESSED, both)


def _scanned_keys(table: Table, snapshot: Snapshot, rule: Unique, decryption: Any) -> np.ndarray:
    files = [task.file.file_path for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files()]
    return _file_keys(files, rule, decryption)


def _file_keys(uris: list[str], rule: Unique, decryption: Any) -> np.ndarray:
    """The sorted, distinct key fingerprints of these data files' rows."""

    def keys_of(uri: str) -> np.ndarray:
        folder, name = uri.rsplit("/", 1)
        found = read_file(Location.of(folder), name, decryption, columns=list(rule.columns))
        fingerprints, valid = quality_rules.keys_of(
            {column: found.column(column).combine_chunks() for column in rule.columns}
        )
        stored: np.ndarray = fingerprints[valid]
        return stored

    if decryption is not None:  # one at a time: pyarrow's KMS calls back into Python; a pool deadlocks
        parts = [keys_of(uri) for uri in uris]
    else:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            parts = list(pool.map(keys_of, uris))
    keys = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    distinct: np.ndarray = np.unique(keys)
    return distinct

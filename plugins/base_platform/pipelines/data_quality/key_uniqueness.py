"""``unique`` across a run: shards check their own keys in parallel, ``commit`` checks them together.

Each ``process_shard`` saves the 64-bit fingerprints of the keys it saw, per part: a shard whose
keys would not fit ``KEYS_AT_ONCE`` is written in several parts, each with its own data files.
Before anything is published, ``commit`` meets each part's keys with those of the parts before
it (discover's order, then the file's); a stored row whose key came earlier is moved to the
quarantine with its raw input row, as every other rejected row is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pyarrow as pa

from base_platform.files import Location, file_digest, read_batches, read_file, row_count
from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.data_quality import quality_rules
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.data_storage import staging_writer
from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.run_records import Shard, ShardResult
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Pipeline, Unique

REPEATED = "duplicate in this run (the key came earlier in the run)"
# parts mended at once: commit runs alone, and CSV and Parquet decoding and encoding release the GIL
PARTS_AT_ONCE = 2
KEY_BUCKETS = 256  # key fingerprint files are indexed by their top byte
KEYS_AT_ONCE = 8 << 20  # fingerprints a shard or the run-wide check holds at once (64 MB), whatever the size


class CommitFailed(RuntimeError):
    """The commit cannot publish exactly the rows the shards counted; no manifest is written."""


def save_keys(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    shard_id: str,
    part: int,
    keys: dict[str, quality_rules.UniqueKeys],
) -> None:
    """A shard part's key fingerprints, one file per unique rule, staged beside its data."""
    for rule in unique_rules(pipeline):
        seen = keys.get(",".join(rule.columns), quality_rules.UniqueKeys())
        write_keys(target, keys_file(run_key, shard_id, part, rule), seen.sorted_keys())


def write_keys(location: Location, path: str, keys: np.ndarray) -> None:
    """Sorted 64-bit key fingerprints, after a table of where each top-byte bucket starts.

    The table lets a reader take any range of buckets with one ranged read (also on S3), so the
    run-wide uniqueness check never has to hold every key of a run at once.
    """
    starts = np.searchsorted(keys, np.arange(KEY_BUCKETS, dtype=np.uint64) << np.uint64(56))
    offsets = np.append(starts, len(keys)).astype("<u8")
    location.fs.create_dir(location.path(path).rsplit("/", 1)[0], recursive=True)
    with location.fs.open_output_stream(location.path(path)) as stream:
        stream.write(offsets.tobytes() + keys.astype("<u8").tobytes())


def read_key_offsets(location: Location, path: str) -> np.ndarray:
    """Where each bucket of a :func:`write_keys` file starts, in keys, and the total at the end."""
    with location.fs.open_input_file(location.path(path)) as source:
        return np.frombuffer(source.read_at(8 * (KEY_BUCKETS + 1), 0), dtype="<u8").astype(np.int64)


def read_keys(location: Location, path: str, start: int, stop: int) -> np.ndarray:
    """Keys ``start`` to ``stop`` (positions from :func:`read_key_offsets`) of a :func:`write_keys` file."""
    with location.fs.open_input_file(location.path(path)) as source:
        data = source.read_at(8 * (stop - start), 8 * (KEY_BUCKETS + 1 + start))
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def unique_rules(pipeline: Pipeline) -> list[Unique]:
    return [rule for rule in pipeline.spec.quality if isinstance(rule, Unique)]


def keys_file(run_key: str, shard_id: str, part: int, rule: Unique) -> str:
    """The sorted fingerprints of every key a shard part saw, for the run-wide check in ``commit``."""
    return f"_staging/{run_key}/{shard_id}/_keys/{'+'.join(rule.columns)}-{part}.u64"


@dataclass(frozen=True)
class Part:
    """Part ``number`` of a shard: its records (as counted by process_shard) and its data files."""

    result: ShardResult
    number: int
    records: tuple[int, int]
    files: range  # positions in result.files


def parts_of(results: list[ShardResult]) -> list[Part]:
    """Every shard's parts, in the run's order."""
    parts = []
    for result in results:
        first_file = 0
        for number, span in enumerate(result.parts):
            files = range(first_file, first_file + span.files)
            parts.append(Part(result, number, (span.first, span.stop), files))
            first_file = files.stop
    return parts


def repeated_file(run_key: str, shard_id: str, rule: Unique, number: int) -> tuple[str, str]:
    """Where the rows a rule removes from a shard's data file ``number`` are staged, and published."""
    name = f"repeated-{'+'.join(rule.columns)}-{number}.parquet"
    return f"_staging/{run_key}/{shard_id}/_{name}", f"_quarantine/{run_key}/{shard_id}-{name}"


def repeated_files(pipeline: Pipeline, run_key: str, shard_id: str, count: int) -> list[tuple[str, str]]:
    """:func:`repeated_file` of every unique rule for each of a shard's ``count`` data files."""
    return [
        repeated_file(run_key, shard_id, rule, number)
        for rule in unique_rules(pipeline)
        for number in range(count)
    ]


def quarantine_repeated_keys(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    results: list[ShardResult],
    key: bytes | None = None,
) -> list[ShardResult]:
    """``unique`` across the run: stored rows whose key an earlier part had go to quarantine.

    Returns the results with those rows counted as quarantined.

    Shard parts check uniqueness alone. Here, before anything is published, each part's keys
    meet those of the parts before it; the first occurrence wins, as within a part. Parts that
    lost rows are mended ``PARTS_AT_ONCE`` at a time: they share no files. Safe to repeat: a
    file's removed rows are staged before the file is replaced by the rest, and a replaced or
    published file has no repeated keys left.
    """
    parts = parts_of(results)
    unchanged = _UnchangedSources()
    for rule in unique_rules(pipeline):  # in turn: a later rule reads the files an earlier one mended
        repeated = _repeated_keys(target, run_key, parts, rule)
        losing = [index for index, keys in enumerate(repeated) if len(keys)]
        mend = partial(_move_repeated_rows, pipeline, target, run_key, rule, unchanged, key)
        with ThreadPoolExecutor(PARTS_AT_ONCE) as pool:
            list(pool.map(mend, [parts[i] for i in losing], [repeated[i] for i in losing]))
    return [_count_repeated_rows(pipeline, target, run_key, result) for result in results]


def _repeated_keys(target: Location, run_key: str, parts: list[Part], rule: Unique) -> list[np.ndarray]:
    """Each part's keys that a part before it already had, a range of buckets at a time."""
    files = [keys_file(run_key, part.result.shard.id, part.number, rule) for part in parts]
    offsets = [read_key_offsets(target, file) for file in files]
    found: list[list[np.ndarray]] = [[] for _ in parts]
    for first, end in _bucket_groups(np.sum([np.diff(o) for o in offsets], axis=0)):
        seen = np.empty(0, dtype=np.uint64)
        for index, file in enumerate(files):
            keys = read_keys(target, file, offsets[index][first], offsets[index][end])
            merged = quality_rules.merge_sorted(seen, keys)
            twice = merged[1:] == merged[:-1]  # each run is distinct: equal neighbours are repeats
            found[index].append(merged[1:][twice])
            seen = np.delete(merged, np.flatnonzero(twice))
    return [np.concatenate(parts) if parts else np.empty(0, np.uint64) for parts in found]


def _bucket_groups(counts: np.ndarray) -> Iterator[tuple[int, int]]:
    """Runs of consecutive buckets holding at most KEYS_AT_ONCE keys together (or one bucket)."""
    first, held = 0, 0
    for bucket, count in enumerate(counts.tolist()):
        if held and held + count > KEYS_AT_ONCE:
            yield first, bucket
            first, held = bucket, 0
        held += count
    yield first, len(counts)


def _move_repeated_rows(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    rule: Unique,
    unchanged: _UnchangedSources,
    key: bytes | None,
    part: Part,
    repeated: np.ndarray,
) -> None:
    """Quarantine a part's stored rows whose key is in ``repeated``, raw, then drop them from its files.

    Every removed row's raw form is staged before any file is replaced, so a retry after a crash
    either redoes both or finds the file already without those rows.
    """
    policy = pipeline.spec.security
    decryption = protection.decryption_properties() if policy.encrypted else None
    drops, removed = {}, {}
    for number in part.files:
        path = part.result.files[number]
        if not target.exists(path):
            continue
        keys = read_file(target, path, decryption, columns=list(rule.columns))
        fingerprints, valid = quality_rules.keys_of(
            {name: keys.column(name).combine_chunks() for name in rule.columns}
        )
        drop = np.isin(fingerprints, repeated) & valid
        if drop.any():
            drops[number], removed[number] = drop, fingerprints[drop]
    if not drops:
        return
    unchanged.check(part.result.shard)
    _quarantine_raw_rows(pipeline, target, run_key, part, rule, removed, key)
    for number, drop in drops.items():
        path = part.result.files[number]
        kept = _kept(read_batches(target, path, decryption), drop)
        staging_writer.replace_file(target, path, kept, protection.file_encryption(policy))


def _kept(batches: Iterator[pa.RecordBatch], drop: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The rows of a file's batches that ``drop`` (one flag per row of the file) does not flag."""
    start = 0
    for batch in batches:
        yield batch.filter(pa.array(~drop[start : start + batch.num_rows]))
        start += batch.num_rows


def _quarantine_raw_rows(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    part: Part,
    rule: Unique,
    removed: dict[int, np.ndarray],
    key: bytes | None,
) -> None:
    """Stage the raw input rows of the stored rows about to be removed, with their record numbers.

    A stored row is the first row of its key in its part (later ones were quarantined as
    duplicates there), so the source is read again, as process_shard read it, for those keys.
    """
    shard = part.result.shard
    wanted = {int(key): number for number, keys in removed.items() for key in keys}
    needles = np.array(sorted(wanted), dtype=np.uint64)
    names = list(pipeline.contract.names)
    reason = f"{'+'.join(rule.columns)}: {REPEATED}"
    writers = {
        number: staging_writer.QuarantineWriter(
            target,
            target.path(repeated_file(run_key, shard.id, rule, number)[0]),
            names,
            shard.label,
            pipeline.spec.security,
            key,
        )
        for number in removed
    }
    for batch, record, rows, fingerprints in _keyed_rows(pipeline, shard, part, rule):
        found: dict[int, list[int]] = {}
        for row in rows[np.isin(fingerprints[rows], needles)].tolist():
            number = wanted.pop(int(fingerprints[row]), None)
            if number is not None:  # the key's first row in the part: the one that was stored
                found.setdefault(number, []).append(row)
        for number, found_rows in found.items():
            writers[number].rows_of(
                batch, pa.array(found_rows, pa.int64()), pa.array([reason] * len(found_rows)), record
            )
        if not wanted:
            break
    for writer in writers.values():
        writer.close()
    if wanted:
        raise CommitFailed(f"{shard.label}: {len(wanted)} stored rows not found in the source again")


class _UnchangedSources:
    """Checks that a source is still what discover hashed, or its rows cannot be found again.

    Each source is hashed at most once per commit (a big file is split into many shards),
    whichever thread asks first; the others wait for that answer.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._unchanged: set[str] = set()

    def check(self, shard: Shard) -> None:
        if shard.kind != "files":  # a span is read again as planned; rows gone from it fail below
            return
        with self._guard:
            lock = self._locks.setdefault(shard.source, threading.Lock())
        with lock:
            if shard.source in self._unchanged:
                return
            source = Location.of(shard.source)
            if file_digest(source, source.base)[0] != shard.checksum:
                raise CommitFailed(
                    f"{shard.label} changed since discover: its repeated rows cannot be kept raw"
                )
            self._unchanged.add(shard.source)


def _keyed_rows(
    pipeline: Pipeline, shard: Shard, part: Part, rule: Unique
) -> Iterator[tuple[pa.RecordBatch, int, np.ndarray, np.ndarray]]:
    """The part's raw batches, read again as process_shard read them, each with its first record
    number, the positions of its rows that have a key, and every row's fingerprint.

    A part is whole batches (process_shard ends one only between batches), so batches before
    ``start`` are skipped whole.
    """
    key_contract = pipeline.contract.model_copy(
        update={"columns": tuple(c for c in pipeline.contract.columns if c.name in rule.columns)}
    )
    record, (start, stop) = 0, part.records
    for raw in sources.read(pipeline, shard):
        rows = raw.batch.num_rows
        if record >= start:
            keys = conformance.conform(raw.batch, key_contract, Findings(rows))
            fingerprints, valid = quality_rules.keys_of({name: keys.column(name) for name in rule.columns})
            yield raw.batch, record, np.flatnonzero(valid), fingerprints
        record += rows
        if record >= stop:
            return


def _count_repeated_rows(
    pipeline: Pipeline, target: Location, run_key: str, result: ShardResult
) -> ShardResult:
    """The result with its repeated rows moved from stored to quarantined, counted from the files
    (so retries agree), and the published names of their quarantine files."""
    moved, repeated = 0, []
    for staged, published in repeated_files(pipeline, run_key, result.shard.id, len(result.files)):
        found = next((path for path in (staged, published) if target.exists(path)), None)
        if found:
            moved += row_count(target, found)
            repeated.append(published)
    return replace(
        result,
        rows_stored=result.rows_stored - moved,
        rows_quarantined=result.rows_quarantined + moved,
        repeated=tuple(repeated),
    )

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
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from base_platform.files import Location, file_digest, read_batches, read_file, row_count
from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.data_quality import quality_rules, table_keys
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.data_storage import staging_writer
from base_platform.pipelines.data_storage.quarantine import sealed_values
from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.run_records import Shard, ShardResult
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Pipeline, Unique

REPEATED = "duplicate in this run (the key came earlier in the run)"
KNOWN = "repeated key (already in the table)"
ERASED = "an erased subject (dataset_erase): dropped, its values not kept"
# a key the table has, one an earlier part of the run had, or a row of a subject erased meanwhile
Check = Literal["known", "repeated", "erased"]
REASONS: dict[Check, str] = {"known": KNOWN, "repeated": REPEATED, "erased": ERASED}
# parts mended at once: commit runs alone, and CSV and Parquet decoding and encoding release the GIL
PARTS_AT_ONCE = 2


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
    """A shard part's key fingerprints, one file per unique rule, staged beside its data: every
    key it saw, and the primary keys of the rows it stored (what the table's index gains)."""
    for rule in unique_rules(pipeline):
        seen = keys.get(",".join(rule.columns), quality_rules.UniqueKeys())
        table_keys.write_keys(target, keys_file(run_key, shard_id, part, rule), seen.sorted_keys())
        if rule == primary_key_rule(pipeline):
            table_keys.write_keys(
                target, keys_file(run_key, shard_id, part, rule, stored=True), seen.stored_keys()
            )


def unique_rules(pipeline: Pipeline) -> list[Unique]:
    return [rule for rule in pipeline.rules if isinstance(rule, Unique)]


def primary_key_rule(pipeline: Pipeline) -> Unique:
    """The rule that keeps the primary key unique: checked across the run, and against the table
    (a merge keeps it by choosing a version instead: see ``key_merge``)."""
    return Unique(rule="unique", columns=pipeline.contract.primary_key)


def keys_file(run_key: str, shard_id: str, part: int, rule: Unique, stored: bool = False) -> str:
    """The sorted fingerprints of every key a shard part saw, for the run-wide check in ``commit``
    (or, ``stored``, of the keys of the rows it stored)."""
    name = f"{'+'.join(rule.columns)}-{part}{'.stored' if stored else ''}.u64"
    return f"_staging/{run_key}/{shard_id}/_keys/{name}"


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


def repeated_file(
    run_key: str, shard_id: str, rule: Unique, number: int, check: Check = "repeated"
) -> tuple[str, str]:
    """Where the rows a check removes from a shard's data file ``number`` are staged, and published."""
    name = f"{check}-{'+'.join(rule.columns)}-{number}.parquet"
    return f"_staging/{run_key}/{shard_id}/_{name}", f"_quarantine/{run_key}/{shard_id}-{name}"


def repeated_files(pipeline: Pipeline, run_key: str, shard_id: str, count: int) -> list[tuple[str, str]]:
    """:func:`repeated_file` of every check of every unique rule for each of a shard's ``count``
    data files: the primary key against the table, then each rule across the run."""
    checks: list[tuple[Unique, Check]] = [
        (primary_key_rule(pipeline), "known"),
        (primary_key_rule(pipeline), "erased"),
    ]
    checks += [(rule, "repeated") for rule in unique_rules(pipeline)]
    return [
        repeated_file(run_key, shard_id, rule, number, check)
        for rule, check in checks
        for number in range(count)
    ]


@dataclass(frozen=True)
class KeyCheck:
    """The results with their repeated rows counted as quarantined, and the sorted primary keys
    of the rows the run stores (None where another ``unique`` rule removed rows too: then only
    the stored files can say)."""

    results: list[ShardResult]
    new_keys: np.ndarray | None


def quarantine_repeated_keys(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    results: list[ShardResult],
    key: bytes | None = None,
    known: str | None = None,
    suppressed: np.ndarray | None = None,
) -> KeyCheck:
    """Stored rows whose primary key the table already has (``known``: its index, see
    ``table_keys``), or whose key of any ``unique`` rule an earlier part of the run had, go to
    quarantine.

    Shard parts check uniqueness alone. Here, before anything is published, each part's keys
    meet the table's, then those of the parts before it; the first occurrence wins, as within a
    part. Parts that lost rows are mended ``PARTS_AT_ONCE`` at a time: they share no files. Safe
    to repeat: a file's removed rows are staged before the file is replaced by the rest, and a
    replaced or published file has no repeated keys left.
    """
    parts = parts_of(results)
    unchanged = _UnchangedSources()
    primary = primary_key_rule(pipeline)
    # a subject erased while the run read: its rows go before any key is judged
    exact = suppressed is None or not drop_erased(pipeline, target, run_key, results, suppressed, key)
    checks: list[tuple[Unique, Check]] = [(primary, "known")] if known else []
    checks += [(rule, "repeated") for rule in unique_rules(pipeline)]
    removed: list[list[np.ndarray]] = [[] for _ in parts]  # each part's primary keys removed
    for rule, check in checks:  # in turn: a later check reads the files an earlier one mended
        files = [keys_file(run_key, part.result.shard.id, part.number, rule) for part in parts]
        if check == "known" and known:
            repeated = _known_keys(target, known, files)
        else:
            repeated = _repeated_keys(target, files)
        losing = [index for index, keys in enumerate(repeated) if len(keys)]
        mend = partial(_move_repeated_rows, pipeline, target, run_key, rule, check, unchanged, key)
        with ThreadPoolExecutor(PARTS_AT_ONCE) as pool:
            list(pool.map(mend, [parts[i] for i in losing], [repeated[i] for i in losing]))
        for index in losing:
            removed[index].append(repeated[index])
        exact = exact and (rule == primary or not losing)
    counted = [_count_repeated_rows(pipeline, target, run_key, result) for result in results]
    exact = exact and not pipeline.merges  # a merge saves no stored keys: it finds them itself
    return KeyCheck(counted, _new_keys(target, run_key, parts, primary, removed) if exact else None)


def _new_keys(
    target: Location, run_key: str, parts: list[Part], rule: Unique, removed: list[list[np.ndarray]]
) -> np.ndarray:
    """The primary keys each part stored, less those the checks removed: what the table gains."""
    kept = []
    for part, gone in zip(parts, removed, strict=True):
        path = keys_file(run_key, part.result.shard.id, part.number, rule, stored=True)
        stored = table_keys.read_keys(target, path, 0, int(table_keys.read_key_offsets(target, path)[-1]))
        if gone:
            stored = stored[~quality_rules.members(stored, np.unique(np.concatenate(gone)))]
        kept.append(stored)
    merged: np.ndarray = quality_rules.merge_sorted(*kept) if kept else np.empty(0, np.uint64)
    return merged  # each part's is sorted: a merge of runs, not a sort


def erased_values(pipeline: Pipeline, key: bytes | None, suppressed: np.ndarray, values: list[str]) -> bool:
    """Whether any of a record's values (a line's fields, a sealed record's) is an erased
    subject: its HMAC, as given or in an HMAC column's canonical form, has a suppressed token."""
    from base_platform.pipelines.data_security import hashing

    if key is None or not len(suppressed) or not values:
        return False
    given = pa.array(values, pa.string())
    for rule in pipeline.spec.security.columns.values():
        if rule.protect != "hmac":
            continue
        forms = pa.concat_arrays([given, protection.canonical(given, rule.canonical)])
        forms = forms.filter(pc.greater(pc.utf8_length(forms), 0))
        digests = hashing.hmac_sha256({"value": forms}, key)["value"]
        if np.isin(hashing.digest_tokens(digests), suppressed).any():
            return True
    return False


def drop_erased(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    results: list[ShardResult],
    suppressed: np.ndarray,
    key: bytes | None,
) -> bool:
    """Drop from the run's staged files the rows of subjects erased since its shards read
    (``suppressed``: the dataset's tokens now): from each data file, counted in a quarantine file
    of reasons alone, and from the shard's quarantine, whose row keeps its reason and nothing
    else. Returns whether any row was dropped, now or by an earlier attempt. Safe to repeat."""
    policy = pipeline.spec.security
    hmac = [
        name
        for name, rule in policy.columns.items()
        if rule.protect == "hmac" and name in pipeline.contract.names
    ]
    decryption = protection.decryption_properties() if policy.encrypted else None
    names, rule = list(pipeline.contract.names), primary_key_rule(pipeline)
    dropped = any(  # an earlier attempt dropped rows already: the stored keys do not know it
        target.exists(repeated_file(run_key, r.shard.id, rule, n, "erased")[0])
        for r in results
        for n in range(len(r.files))
    )
    for result in results:
        for number, path in enumerate(result.files):
            if not target.exists(path):
                continue
            erased = erased_rows(pipeline, read_file(target, path, decryption, columns=hmac), suppressed)
            if not erased.any():
                continue
            staged = repeated_file(run_key, result.shard.id, rule, number, "erased")[0]
            writer = staging_writer.QuarantineWriter(
                target, target.path(staged), names, result.shard.label, policy, key
            )
            writer.counted(int(erased.sum()), ERASED)
            writer.close()
            kept = kept_rows(read_batches(target, path, decryption), erased)
            staging_writer.replace_file(target, path, kept, protection.file_encryption(policy))
            dropped = True
        if result.quarantine and target.exists(result.quarantine):
            _blank_erased(pipeline, target, result.quarantine, suppressed, key)
    return dropped


def erased_rows(pipeline: Pipeline, rows: pa.Table | pa.RecordBatch, suppressed: np.ndarray) -> np.ndarray:
    """Which rows hold an erased subject's pseudonym in an HMAC column (any of its values, in
    a multi-value one)."""
    from base_platform.pipelines.data_security import hashing

    erased = np.zeros(rows.num_rows, dtype=bool)
    for name, rule in pipeline.spec.security.columns.items():
        if rule.protect == "hmac" and name in rows.column_names:
            values, row_of = hashing.each_digest(_combined(rows.column(name)))
            valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
            erased[row_of[valid][np.isin(hashing.digest_tokens(values), suppressed)]] = True
    return erased


def _blank_erased(
    pipeline: Pipeline, target: Location, path: str, suppressed: np.ndarray, key: bytes | None
) -> None:
    """A staged quarantine without an erased subject's values: by its HMAC columns, or, for a
    line that could not be split, by the fields of its sealed record."""
    rows = read_file(target, path)
    erased = erased_rows(pipeline, rows, suppressed)
    for row, sealed in enumerate(rows.column("_sealed").to_pylist()):
        if sealed and key is not None and not erased[row]:
            values = sealed_values(protection.unseal(sealed, key), pipeline.spec.security.separators)
            erased[row] = erased_values(pipeline, key, suppressed, values)
    if erased.any():
        target.write_atomically(_blanked(rows, erased), path)


def _blanked(rows: pa.Table, erased: np.ndarray) -> bytes:
    """Quarantined rows as Parquet, the ``erased`` ones with their reason alone (and source)."""
    mask, columns = pa.array(erased), {}
    for name in rows.column_names:
        if name == "_reason":
            columns[name] = pc.if_else(mask, pa.scalar(ERASED), rows.column(name))
        elif name == "_source":
            columns[name] = rows.column(name)
        else:
            columns[name] = pc.if_else(mask, pa.scalar(None, rows.schema.field(name).type), rows.column(name))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _known_keys(target: Location, index: str, files: list[str]) -> list[np.ndarray]:
    """Each part's keys that the table's index holds, a range of buckets at a time."""
    offsets = [table_keys.read_key_offsets(target, file) for file in files]
    table_offsets = table_keys.read_key_offsets(target, index)
    found: list[list[np.ndarray]] = [[] for _ in files]
    for first, end in table_keys.bucket_groups(np.diff(table_offsets)):
        stored = table_keys.read_keys(target, index, table_offsets[first], table_offsets[end])
        for position, file in enumerate(files):
            keys = table_keys.read_keys(target, file, offsets[position][first], offsets[position][end])
            found[position].append(keys[quality_rules.members(keys, stored)])
    return [np.concatenate(parts) if parts else np.empty(0, np.uint64) for parts in found]


def _repeated_keys(target: Location, files: list[str]) -> list[np.ndarray]:
    """Each part's keys that a part before it already had, a range of buckets at a time."""
    offsets = [table_keys.read_key_offsets(target, file) for file in files]
    found: list[list[np.ndarray]] = [[] for _ in files]
    for first, end in table_keys.bucket_groups(np.sum([np.diff(o) for o in offsets], axis=0)):
        seen = np.empty(0, dtype=np.uint64)
        for index, file in enumerate(files):
            keys = table_keys.read_keys(target, file, offsets[index][first], offsets[index][end])
            merged = quality_rules.merge_sorted(seen, keys)
            twice = merged[1:] == merged[:-1]  # each run is distinct: equal neighbours are repeats
            found[index].append(merged[1:][twice])
            seen = np.delete(merged, np.flatnonzero(twice))
    return [np.concatenate(parts) if parts else np.empty(0, np.uint64) for parts in found]


def _move_repeated_rows(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    rule: Unique,
    check: Check,
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
            if check == "known":  # the key is the whole story: the source is not read again
                _quarantine_keys(
                    pipeline, target, run_key, part, rule, number, keys.filter(pa.array(drop)), key
                )
    if not drops:
        return
    if check != "known":
        unchanged.check(part.result.shard)
        _quarantine_raw_rows(pipeline, target, run_key, part, rule, check, removed, key)
    for number, drop in drops.items():
        path = part.result.files[number]
        kept = kept_rows(read_batches(target, path, decryption), drop)
        staging_writer.replace_file(target, path, kept, protection.file_encryption(policy))


def _quarantine_keys(
    pipeline: Pipeline,
    target: Location,
    run_key: str,
    part: Part,
    rule: Unique,
    number: int,
    keys: pa.Table,
    key: bytes | None,
) -> None:
    """Stage the rows a data file loses because the table has their key: the key and the reason.

    A source read again may have changed since (a row updated in Postgres, an API's page), and a
    repeat needs no fixing; so the stored key is kept, not the raw row."""
    writer = staging_writer.QuarantineWriter(
        target,
        target.path(repeated_file(run_key, part.result.shard.id, rule, number, "known")[0]),
        list(pipeline.contract.names),
        part.result.shard.label,
        pipeline.spec.security,
        key,
    )
    texts = {
        name: conformance.render_text(keys.column(name).combine_chunks(), pipeline.contract.column(name))
        for name in rule.columns
    }
    writer.keyed(texts, f"{'+'.join(rule.columns)}: {KNOWN}")
    writer.close()


def kept_rows(batches: Iterator[pa.RecordBatch], drop: np.ndarray) -> Iterator[pa.RecordBatch]:
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
    check: Check,
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
    reason = f"{'+'.join(rule.columns)}: {REASONS[check]}"
    writers = {
        number: staging_writer.QuarantineWriter(
            target,
            target.path(repeated_file(run_key, shard.id, rule, number, check)[0]),
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


def raw_key_fingerprints(
    pipeline: Pipeline, columns: tuple[str, ...], raw: pa.RecordBatch | pa.Table
) -> tuple[np.ndarray, np.ndarray]:
    """Raw key values typed by the contract, as the shards typed them, and fingerprinted: each
    row's fingerprint, and whether it has a key at all."""
    contract = pipeline.contract.model_copy(
        update={"columns": tuple(c for c in pipeline.contract.columns if c.name in columns)}
    )
    batch = pa.RecordBatch.from_arrays([_combined(raw.column(name)) for name in columns], names=list(columns))
    typed = conformance.conform(batch, contract, Findings(batch.num_rows))
    return quality_rules.keys_of({name: typed.column(name) for name in columns})


def _combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _keyed_rows(
    pipeline: Pipeline, shard: Shard, part: Part, rule: Unique
) -> Iterator[tuple[pa.RecordBatch, int, np.ndarray, np.ndarray]]:
    """The part's raw batches, read again as process_shard read them, each with its first record
    number, the positions of its rows that have a key, and every row's fingerprint.

    A part is whole batches (process_shard ends one only between batches), so batches before
    ``start`` are skipped whole.
    """
    record, (start, stop) = 0, part.records
    for raw in sources.read(pipeline, shard):
        rows = raw.batch.num_rows
        if record >= start:
            fingerprints, valid = raw_key_fingerprints(pipeline, rule.columns, raw.batch)
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

"""``write: merge``: an upsert by primary key, the latest version winning (dlt's merge disposition).

Commit runs it after the key checks, before anything is published. Of a key's versions (the
run's rows, and the row ``main`` holds) the one with the largest ``order_by`` wins; a null
orders first. A tie within the run goes to the later row (discover's order, then the file's),
a tie with the table to the table, so a replayed file or a re-read page changes nothing.

The run's losers leave its staged files; how many is what the shards stored less what the
files hold, so a retry counts the same. The table's losers are removed copy-on-write: each of
its data files that holds one is written again without it, under a name of the run's (a retry
writes the same file), and the run's snapshot swaps them (one Iceberg overwrite).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.files import Location, read_batches, read_file, row_count
from base_platform.pipelines.data_quality import key_uniqueness, quality_rules, table_keys
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.data_storage import staging_writer, tables
from base_platform.pipelines.run_records import ShardResult
from base_platform.pipelines.spec import Pipeline


@dataclass(frozen=True)
class Merge:
    """What a merge leaves to commit: the results with their superseded rows counted, the sorted
    keys the table gains, and the table's files it rewrote (``rewritten``, URIs to add) in place
    of ``replaced`` (URIs to remove); ``rows_updated``: the table's rows a newer version replaced."""

    results: list[ShardResult]
    new_keys: np.ndarray
    rewritten: list[str]
    replaced: list[str]
    rows_updated: int


@dataclass(frozen=True)
class _Versions:
    """Rows of several files, each with its key's fingerprint, its order value and its place."""

    fingerprints: np.ndarray
    order: pa.Array
    file: np.ndarray  # index into the list of files read
    row: np.ndarray  # position in that file
    keys: dict[str, pa.Array]  # the key columns' values


def merge(
    pipeline: Pipeline,
    target: Location,
    table: Any,
    run_key: str,
    results: list[ShardResult],
    known: str | None,
    decryption: Any = None,
) -> Merge:
    """Keep one version of each key across the run and ``main`` (see the module's doc)."""
    files = [path for result in results for path in _run_files(target, run_key, result)]
    run = _versions(pipeline, [(target, path) for path in files], decryption)
    winners, losers = _latest_of_each_key(run)
    updated: dict[str, np.ndarray] = {}
    inserted = winners
    if known is not None and len(winners):
        held = table_keys.contains(target, known, run.fingerprints[winners])
        inserted = winners[~held]
        if held.any():
            updated, beaten = _against_table(pipeline, table, run, winners[held], decryption)
            losers = np.concatenate([losers, beaten])
    policy = pipeline.spec.security
    by_file: dict[int, list[int]] = defaultdict(list)
    for loser in losers.tolist():
        by_file[int(run.file[loser])].append(int(run.row[loser]))
    for file_index, rows in by_file.items():
        path = files[file_index]
        drop = np.zeros(row_count(target, path), dtype=bool)
        drop[rows] = True
        rest = key_uniqueness.kept_rows(read_batches(target, path, decryption), drop)
        staging_writer.replace_file(target, path, rest, protection.file_encryption(policy))
    rewritten = [_rewrite(uri, rows, run_key, policy, decryption) for uri, rows in updated.items()]
    counted = [_count_superseded(target, run_key, result) for result in results]
    return Merge(
        results=counted,
        new_keys=np.sort(run.fingerprints[inserted]),
        rewritten=[uri for uri in rewritten if uri is not None],
        replaced=list(updated),
        rows_updated=sum(len(rows) for rows in updated.values()),
    )


def _run_files(target: Location, run_key: str, result: ShardResult) -> list[str]:
    """A shard's data files where they are now: staged, or published by an attempt whose
    snapshot was not made (a retry merges them again, to the same outcome)."""
    found = []
    for staged in result.files:
        published = staging_writer.published_path(run_key, result.shard.id, staged)
        found += [path for path in (staged, published) if target.exists(path)][:1]
    return found


def _versions(pipeline: Pipeline, files: list[tuple[Location, str]], decryption: Any) -> _Versions:
    """The key fingerprint and order value of every row of ``files``, in their order. A file
    written before the contract had ``order_by`` holds nulls in it, which order first."""
    key, order_by = pipeline.contract.primary_key, pipeline.spec.write.order_by
    assert order_by is not None, "a merge orders by a column"
    order_type = tables.stored_schema(pipeline).field(order_by).type
    fingerprints, orders, file_of, row_of = [], [], [], []
    keys: dict[str, list[pa.Array]] = {name: [] for name in key}
    for index, (location, path) in enumerate(files):
        rows = read_file(location, path, decryption, columns=list(dict.fromkeys([*key, order_by])))
        found, _ = quality_rules.keys_of({name: rows.column(name).combine_chunks() for name in key})
        fingerprints.append(found)
        for name in key:
            keys[name].append(rows.column(name).combine_chunks())
        order = rows.column(order_by).combine_chunks() if order_by in rows.column_names else None
        orders.append(order if order is not None else pa.nulls(rows.num_rows, order_type))
        file_of.append(np.full(rows.num_rows, index, dtype=np.int64))
        row_of.append(np.arange(rows.num_rows, dtype=np.int64))
    if not files:
        empty = np.empty(0, np.int64)
        types = tables.stored_schema(pipeline)
        nothing = {name: pa.array([], types.field(name).type) for name in key}
        return _Versions(np.empty(0, np.uint64), pa.array([], order_type), empty, empty, nothing)
    return _Versions(
        np.concatenate(fingerprints),
        pa.concat_arrays(orders),
        np.concatenate(file_of),
        np.concatenate(row_of),
        {name: pa.concat_arrays(values) for name, values in keys.items()},
    )


def _latest_of_each_key(run: _Versions) -> tuple[np.ndarray, np.ndarray]:
    """The rows that win within the run (the largest order value, the later row on a tie), and
    the rest; both as positions into ``run``."""
    count = len(run.fingerprints)
    if not count:
        empty = np.empty(0, np.int64)
        return empty, empty
    ranked = pa.table({"key": run.fingerprints, "order": run.order, "place": np.arange(count)})
    order = (
        pc.sort_indices(
            ranked,
            sort_keys=[("key", "ascending"), ("order", "ascending", "at_start"), ("place", "ascending")],
        )
        .to_numpy()
        .astype(np.int64)
    )
    keys = run.fingerprints[order]
    last = np.ones(count, dtype=bool)
    last[:-1] = keys[:-1] != keys[1:]
    return np.sort(order[last]), np.sort(order[~last])


def _against_table(
    pipeline: Pipeline, table: Any, run: _Versions, candidates: np.ndarray, decryption: Any
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Meet the run's winners whose key ``main`` holds with the table's rows of those keys: the
    rows of each table file a newer version replaces (by file URI), and the run's rows that lose."""
    wanted = run.fingerprints[candidates]
    by_key = np.argsort(wanted)
    wanted_sorted, winner_of = wanted[by_key], candidates[by_key]
    uris = [
        task.file.file_path
        for task in table.scan(row_filter=_key_range(pipeline, run, candidates)).plan_files()
    ]
    replaced: dict[str, np.ndarray] = {}
    beaten: list[np.ndarray] = []
    for uri in uris:
        folder, name = uri.rsplit("/", 1)
        stored = _versions(pipeline, [(Location.of(folder), name)], decryption)
        hit = quality_rules.members(stored.fingerprints, wanted_sorted)
        if not hit.any():
            continue
        rows = np.flatnonzero(hit)
        challengers = winner_of[np.searchsorted(wanted_sorted, stored.fingerprints[rows])]
        newer = _newer(run.order.take(pa.array(challengers)), stored.order.take(pa.array(rows)))
        if newer.any():
            replaced[uri] = rows[newer]
        beaten.append(challengers[~newer])
    return replaced, np.concatenate(beaten) if beaten else np.empty(0, np.int64)


def _key_range(pipeline: Pipeline, run: _Versions, candidates: np.ndarray) -> Any:
    """The span of the candidates' key values, each key column's smallest to largest: Iceberg
    skips the files whose column bounds fall outside it (keys that grow over time, as most do)."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual

    found: Any = AlwaysTrue()
    for name, values in run.keys.items():
        span = pc.min_max(values.take(pa.array(candidates)))
        low, high = span["min"].as_py(), span["max"].as_py()
        if low is not None and high is not None:
            found = And(
                found, And(GreaterThanOrEqual(term=name, value=low), LessThanOrEqual(term=name, value=high))
            )
    return found


def _newer(challenger: pa.Array, held: pa.Array) -> np.ndarray:
    """Whether each challenger's order value is larger than the held one's (a null is smallest)."""
    larger = pc.fill_null(pc.greater(challenger, held), False)
    over_null = pc.and_(pc.is_valid(challenger), pc.is_null(held))
    return np.asarray(pc.or_(larger, over_null).to_numpy(zero_copy_only=False), dtype=bool)


def _rewrite(uri: str, rows: np.ndarray, run_key: str, policy: Any, decryption: Any) -> str | None:
    """A table file written again without ``rows``, beside it under the run's name; its URI
    (None: nothing is left of it)."""
    folder, name = uri.rsplit("/", 1)
    location = Location.of(folder)
    # one name per file and run, of a fixed length: a retry writes it again, a file rewritten
    # by many merges keeps a short name
    merged = f"merged-{hashlib.sha256(f'{uri} {run_key}'.encode()).hexdigest()[:32]}.parquet"
    drop = np.zeros(row_count(location, name), dtype=bool)
    drop[rows] = True
    if drop.all():
        return None
    rest = key_uniqueness.kept_rows(read_batches(location, name, decryption), drop)
    staging_writer.replace_file(location, name, rest, protection.file_encryption(policy), into=merged)
    return f"{folder}/{merged}"


def _count_superseded(target: Location, run_key: str, result: ShardResult) -> ShardResult:
    """The result with the rows its files lost to newer versions counted: what it stored after the
    key checks, less what its files hold now (so a retry, finding them gone, counts the same)."""
    held = sum(row_count(target, path) for path in _run_files(target, run_key, result))
    return replace(result, rows_stored=held, rows_superseded=result.rows_stored - held)

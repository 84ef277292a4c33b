"""The pipeline engine: what ``discover``, ``process_shard`` and ``commit`` do, callable without a DAG.

``discover`` and ``commit`` use the dataset's Iceberg table (``tables``), whose catalog is an
Airflow connection; ``process_shard`` needs no catalog, so a shard runs anywhere (a pod too).

One streaming pass per shard: ingestion decodes record batches, the contract types them, the
quality rules and the security policy apply, and storage writes partitioned Parquet to
staging. Stages hand each other Arrow batches in memory and write nothing in between. Every
row ends either stored or quarantined with its reason, and the counts say so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from base_platform.files import Location, read_file, row_count
from base_platform.pipelines.data_ingestion import decoding, sources
from base_platform.pipelines.data_quality import key_merge, key_uniqueness, quality_rules, table_keys
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.data_storage import staging_writer, tables
from base_platform.pipelines.data_storage.quarantine import raw_fields
from base_platform.pipelines.pipeline_management import breaker
from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.run_records import (
    CommitRequest,
    PartSpan,
    RunRecord,
    Shard,
    ShardResult,
    highest,
)
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import Freshness, Pipeline, cursor_of

log = logging.getLogger(__name__)
ERASED = key_uniqueness.ERASED
BYTES_PER_STORED_ROW = 48  # zstd Parquet of the transactions contract, measured; sizes target files


class ShardFailed(RuntimeError):
    """A shard that cannot be read at all; nothing of it is published."""


def discover(pipeline: Pipeline, source_uri: str, target_uri: str, full_refresh: bool) -> list[Shard]:
    """The slices of the source not yet in the dataset, a shard each (see ``sources``).

    Makes or evolves the dataset's table first, so a contract change is refused before any work.
    What the table's published lineage holds (files' checksums, a cursor's high-water mark) is
    not read again.
    """
    table = tables.prepare(pipeline, tables.stored_schema(pipeline), target_uri, full_refresh)
    resume = (
        sources.Resume()
        if full_refresh
        else sources.Resume(tables.committed_inputs(table), tables.committed_position(table))
    )
    try:
        shards = sources.plan(pipeline, source_uri, resume)
    except decoding.SourceError as exc:
        raise ShardFailed(str(exc)) from exc
    if any((shard.span or {}).get("lookback") for shard in shards):  # it reads rows the table may hold
        rule = key_uniqueness.primary_key_rule(pipeline)
        decryption = protection.decryption_properties() if pipeline.spec.security.encrypted else None
        target = Location.of(target_uri)
        known = table_keys.table_index(table, target, rule, decryption)
        window = next(s.span for s in shards if s.span and s.span.get("lookback"))
        quarantined = _quarantined_since(pipeline, table, target, window)
        shards = [
            replace(s, span={**s.span, "known": known, "quarantined": quarantined})
            if s.span and s.span.get("lookback")
            else s
            for s in shards
        ]
    return shards


def _quarantined_since(
    pipeline: Pipeline, table: Any, target: Location, span: Mapping[str, Any]
) -> str | None:
    """The primary keys of the rows the runs in a lookback window quarantined, as a key file
    beside ``main``'s index: a lookback reads them again, and they were counted once already."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    rule = key_uniqueness.primary_key_rule(pipeline)
    path = table_keys.index_file(snapshot.snapshot_id, rule, "quarantined")
    if target.exists(path):
        return path
    found = [np.empty(0, np.uint64)]
    for record in reversed(tables.history(table)):  # newest first; runs an erasure expired too
        if highest([record.position, [span["since"]]]) == [span["since"]]:
            break  # this run and those before it read nothing in the window
        for file in (path for path in record.quarantine if target.exists(path)):  # an erasure may empty one
            rows = read_file(target, file, None, columns=list(rule.columns))
            fingerprints, valid = key_uniqueness.raw_key_fingerprints(pipeline, rule.columns, rows)
            found.append(fingerprints[valid])
    table_keys.write_keys(target, path, np.unique(np.concatenate(found)))
    return path


def _with_partition(batch: pa.RecordBatch, pipeline: Pipeline) -> pa.RecordBatch:
    """The batch with a key column per day partition, which the writer groups by and does not store."""
    for partition in pipeline.spec.storage.partitions:
        if partition.transform == "day":
            day = pc.cast(batch.column(partition.column), pa.date32())
            batch = batch.append_column(partition.name, day)
    return batch


_Kept = tuple[pa.RecordBatch, pa.BooleanArray]  # a batch, and which of its rows are stored


class _Pass:
    """The state of one streaming pass: counts, timings, uniqueness and the quarantine."""

    def __init__(
        self,
        pipeline: Pipeline,
        key: bytes | None,
        quarantine: staging_writer.QuarantineWriter,
        target: Location,
        span: Mapping[str, Any],
    ) -> None:
        self.pipeline, self.key, self.quarantine, self.target = pipeline, key, quarantine, target
        self.counts: Counter[str] = Counter()
        self.timings: dict[str, float] = {}
        self.keys: dict[str, quality_rules.UniqueKeys] = {}
        self.latest: datetime | None = None
        self.nulls: Counter[str] = Counter()
        self.cursor = cursor_of(pipeline)
        self.position: Any = None  # the highest cursor value read, stored or not
        self.suppressed = table_keys.suppressed(target)  # tokens of erased subjects: their rows drop
        # the table's key index, for rows a lookback reads again (a merge meets them with the
        # table's version of their key instead), and the keys the window's runs quarantined
        self.known: str | None = None if pipeline.merges else span.get("known")
        self.quarantined: str | None = span.get("quarantined")

    def _unseen(self, raw: decoding.RawBatch) -> decoding.RawBatch:
        """A batch read again behind the position (a lookback) without the rows whose primary
        key the table holds: they were counted when first read, and are not again."""
        if (self.known is None and self.quarantined is None) or not raw.batch.num_rows:
            return raw
        key = self.pipeline.contract.primary_key
        fingerprints, valid = key_uniqueness.raw_key_fingerprints(self.pipeline, key, raw.batch)
        held = np.zeros(len(fingerprints), dtype=bool)
        if self.known is not None:
            held |= table_keys.contains(self.target, self.known, fingerprints)
        if self.quarantined is not None:
            held |= table_keys.contains(self.target, self.quarantined, fingerprints)
        held &= valid
        if len(self.suppressed):  # an erased subject's row: counted when first read, not again
            full = conformance.conform(raw.batch, self.pipeline.contract, Findings(raw.batch.num_rows))
            erased = self._erased(protection.protect(full, self.pipeline.spec.security, self.key))
            held |= erased if erased is not None else False
        return replace(raw, batch=raw.batch.filter(pa.array(~held)), known=False)

    def _erased(self, stored: pa.RecordBatch) -> np.ndarray | None:
        """Which rows carry the pseudonym of a subject erased from the dataset (None: none do)."""
        if not len(self.suppressed):
            return None
        erased = key_uniqueness.erased_rows(self.pipeline, stored, self.suppressed)
        return erased if erased.any() else None

    def _erased_line(self, line: bytes) -> bool:
        """Whether a line that could not be split into columns holds an erased subject."""
        return bool(len(self.suppressed)) and key_uniqueness.erased_values(
            self.pipeline, self.key, self.suppressed, raw_fields(line.decode("utf-8", "replace"))
        )

    def _timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - started
        return now

    def batches(self, raw_batches: Iterator[decoding.RawBatch]) -> Iterator[_Kept]:
        """Each batch as it may be stored, with which rows to store; the rest are quarantined.

        The rows are not filtered here: the writer's one copy of a batch drops them as it groups
        the rest by partition.
        """
        spec, contract = self.pipeline.spec, self.pipeline.contract
        while True:
            started = time.perf_counter()
            raw = next(raw_batches, None)
            started = self._timed("ingestion", started)
            if raw is None:
                return
            if raw.known:
                raw = self._unseen(raw)
            rows = raw.batch.num_rows
            if raw.position is not None:
                self.position = highest([self.position, raw.position])
            self.counts["rows_in"] += rows + len(raw.rejects)
            self.counts["raw_bytes"] += raw.batch.nbytes + sum(len(r.raw) for r in raw.rejects)
            rejects = [r for r in raw.rejects if not self._erased_line(r.raw)]
            self.quarantine.counted(len(raw.rejects) - len(rejects), ERASED)
            self.quarantine.lines([(r.raw, r.reason) for r in rejects])
            findings = Findings(rows)
            typed = conformance.conform(raw.batch, contract, findings)
            started = self._timed("contracts", started)
            quality_rules.apply(typed, self.pipeline.rules, findings, self.keys)
            bad = findings.bad()
            started = self._timed("quality", started)
            stored = _with_partition(protection.protect(typed, spec.security, self.key), self.pipeline)
            erased = self._erased(stored)
            if erased is not None:  # an erased subject: counted, never quarantined with its values
                self.quarantine.counted(int(erased.sum()), ERASED)
                bad = pc.and_(bad, pa.array(~erased))
            if pc.any(bad).as_py():
                rows_out = pc.indices_nonzero(bad)
                self.quarantine.rows_of(
                    raw.batch, rows_out, findings.reasons(rows_out), self.counts["records"]
                )
            self.counts["records"] += rows
            keep = pc.invert(bad) if erased is None else pc.and_(pc.invert(bad), pa.array(~erased))
            kept = keep.to_numpy(zero_copy_only=False)
            for keys in self.keys.values():
                keys.keep(kept)
            self._observe(typed, keep)
            self._timed("security", started)
            self.counts["stored"] += keep.true_count
            yield stored, keep

    def stage(
        self, raw_batches: Iterator[decoding.RawBatch], target: Location, run_key: str, shard_id: str
    ) -> tuple[list[str], list[PartSpan]]:
        """Write the pass to staging part by part, each part's key fingerprints beside its files."""
        spec = self.pipeline.spec
        schema, encryption = tables.stored_schema(self.pipeline), protection.file_encryption(spec.security)
        rows_per_file = max(10_000, spec.storage.target_file_mb * (1 << 20) // BYTES_PER_STORED_ROW)
        files: list[str] = []
        parts: list[PartSpan] = []
        for number, part in enumerate(self.parts(self.batches(raw_batches))):
            with staging_writer.PartitionedWriter(
                target,
                f"_staging/{run_key}/{shard_id}/data",
                schema,
                tuple(partition.name for partition in spec.storage.partitions),
                f"part-{run_key}-{shard_id}-{number}",
                rows_per_file,
                encryption,
            ) as writer:
                for batch, keep in part:
                    writer.write(batch, keep)
                written = writer.close()
            key_uniqueness.save_keys(self.pipeline, target, run_key, shard_id, number, self.keys)
            self.keys.clear()
            first_record = parts[-1].stop if parts else 0
            parts.append(PartSpan(first_record, self.counts["records"], len(written)))
            files += written
        return files, parts

    def parts(self, batches: Iterator[_Kept]) -> Iterator[Iterator[_Kept]]:
        """The shard's batches in parts of at most ``KEYS_AT_ONCE`` keys, so no file is too big to check.

        Each part starts with no keys (the caller saves and clears them); ``key_uniqueness`` checks keys
        across the parts of a shard as it does across shards. Most shards are one part.
        """
        yield self._until_keys_fill(next(batches, None), batches)
        while (first := next(batches, None)) is not None:
            yield self._until_keys_fill(first, batches)

    def _until_keys_fill(self, first: _Kept | None, rest: Iterator[_Kept]) -> Iterator[_Kept]:
        batch = first
        while batch is not None:
            yield batch
            if sum(keys.held for keys in self.keys.values()) >= table_keys.KEYS_AT_ONCE:
                return
            batch = next(rest, None)

    def _observe(self, typed: pa.RecordBatch, keep: pa.BooleanArray) -> None:
        """Null counts and the newest event of the rows stored, for the manifest and the monitor;
        the highest cursor value of the rows read, where the next run resumes."""
        if self.cursor is not None:
            furthest = sources.as_position(pc.max(typed[self.cursor]).as_py())
            self.position = highest([self.position, furthest])
        for name, values in zip(typed.schema.names, typed.columns, strict=True):
            stored_nulls = pc.sum(pc.and_(keep, pc.is_null(values))).as_py() if values.null_count else 0
            self.nulls[name] += stored_nulls or 0
        rules = [r for r in self.pipeline.spec.quality if isinstance(r, Freshness)]
        if rules and keep.true_count:
            newest = pc.max(pc.filter(typed.column(rules[0].column), keep)).as_py()
            if newest is not None and (self.latest is None or newest > self.latest):
                self.latest = newest


def use_jemalloc() -> None:
    """Arrow's jemalloc pool, where the wheel has one: it keeps freed pages for the next batch.

    The default (mimalloc) hands them back, and the kernel zeroes them again on the next batch:
    a shard spent about 6% of its CPU there and peaked 130 MB higher. This covers what Python
    allocates; Arrow's C++ internals (file reads, the writer) follow ``ARROW_DEFAULT_MEMORY_POOL``,
    which the image and ``make run`` set, because Arrow reads it once, at its first allocation.
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def process_shard(
    pipeline: Pipeline, shard: Shard, run_key: str, target_uri: str, key: bytes | None
) -> ShardResult:
    """Stage one shard; a retry deletes the previous attempt first. Returns the shard's counts."""
    use_jemalloc()
    target = Location.of(target_uri)
    staging = f"_staging/{run_key}/{shard.id}"
    target.delete_dir(staging)
    names = list(pipeline.contract.names)
    quarantine = staging_writer.QuarantineWriter(
        target, target.path(staging, "_quarantine.parquet"), names, shard.label, pipeline.spec.security, key
    )
    state = _Pass(pipeline, key, quarantine, target, shard.span or {})
    target.write_json_atomically({"tokens": len(state.suppressed)}, staging, "_suppressed.json")
    began = datetime.now(UTC)
    started = time.perf_counter()
    try:
        files, parts = state.stage(sources.read(pipeline, shard), target, run_key, shard.id)
    except decoding.SourceError as exc:
        raise ShardFailed(f"{shard.label}: {exc}") from exc
    finally:
        quarantine.close()
    elapsed = time.perf_counter() - started
    state.timings["storage"] = max(0.0, elapsed - sum(state.timings.values()))
    if shard.span is not None and "upto" not in shard.span and state.position is not None:
        shard = replace(shard, span={**shard.span, "upto": state.position})  # read again, it is this
    result = ShardResult(
        shard=shard,
        rows_in=state.counts["rows_in"],
        rows_stored=state.counts["stored"],
        rows_quarantined=quarantine.rows,
        files=tuple(target_relative(target, f) for f in files),
        parts=tuple(parts),
        quarantine=target_relative(target, quarantine.file) if quarantine.rows else None,
        null_counts=dict(state.nulls),
        latest_event=state.latest.isoformat() if state.latest else None,
        started_at=began.isoformat(),
        seconds=round(elapsed, 3),
        stage_seconds={stage: round(seconds, 3) for stage, seconds in state.timings.items()},
        bytes_in=shard.size or state.counts["raw_bytes"],  # size is known before reading for files
        position=state.position,
    )
    if result.rows_in != result.rows_stored + result.rows_quarantined:
        raise ShardFailed(f"{shard.label}: rows in != stored + quarantined ({result})")
    target.write_json_atomically(result.to_json(), staging, "_result.json")
    return result


def target_relative(target: Location, path: str) -> str:
    return path.removeprefix(target.base + "/")


def _shard_files(
    pipeline: Pipeline, target: Location, run_key: str, result: ShardResult
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], ShardResult]:
    """A shard's (staged, published) data files and quarantine files, and its result with the
    published paths.

    A data file that lost every row to the run-wide uniqueness check is in neither place and
    left out; commit's row count check would notice anything else missing.
    """
    shard_id = result.shard.id
    data = [(staged, staging_writer.published_path(run_key, shard_id, staged)) for staged in result.files]
    quarantine = key_uniqueness.repeated_files(pipeline, run_key, shard_id, len(data))
    published_quarantine = None
    if result.quarantine:
        published_quarantine = f"_quarantine/{run_key}/{shard_id}.parquet"
        quarantine.append((result.quarantine, published_quarantine))
    data = [(staged, final) for staged, final in data if target.exists(staged) or target.exists(final)]
    published = replace(result, files=tuple(final for _, final in data), quarantine=published_quarantine)
    return data, quarantine, published


def _publish(target: Location, moves: list[tuple[str, str]]) -> None:
    """Rename staged files to their published names; safe to repeat after a crash."""
    for staged, final in moves:
        if target.exists(staged):
            target.fs.create_dir(target.path(final).rsplit("/", 1)[0], recursive=True)
            target.fs.move(target.path(staged), target.path(final))


def commit(pipeline: Pipeline, request: CommitRequest) -> RunRecord:
    """Publish staged shards and add them to the dataset's table as one snapshot; returns its record.

    The snapshot is staged on the table's ``audit`` branch; with ``request.publish`` the circuit
    breaker audits it at once and publishes it to ``main`` or opens (``published`` in the record
    says which). The pipeline DAG audits in a task of its own instead.

    A run commits at most once: a retry, or a re-run of a run that already has its snapshot,
    adds nothing and returns that snapshot's record. ``full_refresh`` replaces every earlier
    row in the same snapshot. The request's ``started_at`` makes the GB/hour the run's own wall
    clock, not a worker's (see ``CommitRequest`` for the rest).
    """
    if not request.results:
        raise ValueError("nothing to commit: no shard results")
    use_jemalloc()
    target = Location.of(request.target_uri)
    table = tables.load(pipeline.spec.name)
    if table is None:
        raise key_uniqueness.CommitFailed(
            f"table {tables.identifier(pipeline.spec.name)} does not exist: discover first"
        )
    done = tables.snapshot_of_run(table, request.run_key)
    if done is None and (expired := tables.expired_run(table, request.run_key)) is not None:
        return expired  # committed, and its snapshot since expired (an erasure reached it)
    if done is None:
        done = _add_snapshot(pipeline, target, table, request)
    if not breaker.on_main(table, done.snapshot_id):
        breaker.stage(table, done)
    target.delete_dir(f"_staging/{request.run_key}")
    _delete_if_empty(target, "_staging")
    record = tables.run_record(done)
    assert record is not None, "the run's snapshot holds its record"
    if request.publish:
        verdict = breaker.audit_and_publish(pipeline, table, done.snapshot_id, request.run_key)
        record = replace(record, published=verdict.passed, breaker=verdict.reason or None)
    return record


def _add_snapshot(pipeline: Pipeline, target: Location, table: Any, request: CommitRequest) -> Any:
    """The key checks (against the table, across the run), the row count check, the renames,
    then the snapshot: the commit point, and its key index. A crash anywhere before the snapshot
    leaves nothing a reader sees; one before the index leaves it to be made from a scan."""
    run_key = request.run_key
    staged = sorted(request.results, key=lambda r: r.shard.index)
    if gone := [r.shard.label for r in staged if not target.exists(f"_staging/{run_key}/{r.shard.id}")]:
        raise key_uniqueness.CommitFailed(  # committed once, and its snapshot dropped since (an erasure)
            f"run {run_key}: the staged files of {gone[0]} are gone; nothing was committed now, run it again"
        )
    decryption = protection.decryption_properties() if pipeline.spec.security.encrypted else None
    primary_key = key_uniqueness.primary_key_rule(pipeline)
    started = time.perf_counter()
    known = None if request.full_refresh else table_keys.table_index(table, target, primary_key, decryption)
    suppressed = table_keys.suppressed(target)
    read_with = min((_suppression_used(target, run_key, r) for r in staged), default=len(suppressed))
    checked = key_uniqueness.quarantine_repeated_keys(
        pipeline,
        target,
        run_key,
        staged,
        request.key,
        None if pipeline.merges else known,
        suppressed if len(suppressed) > read_with else None,
    )
    merged = None
    if pipeline.merges:
        merged = key_merge.merge(pipeline, target, table, run_key, checked.results, known, decryption)
        checked = key_uniqueness.KeyCheck(merged.results, merged.new_keys)
    key_seconds = time.perf_counter() - started
    data: list[tuple[str, str]] = []
    quarantine: list[tuple[str, str]] = []
    published = []
    for result in checked.results:
        shard_data, shard_quarantine, shard_published = _shard_files(pipeline, target, run_key, result)
        data, quarantine = data + shard_data, quarantine + shard_quarantine
        published.append(shard_published)
    stored = sum(result.rows_stored for result in published)
    held = sum(row_count(target, staged if target.exists(staged) else final) for staged, final in data)
    if stored != held:
        raise key_uniqueness.CommitFailed(f"the run's files hold {held} rows, the shards {stored}")
    _publish(target, data + quarantine)
    record = _run_record(pipeline, published, request)
    record = replace(record, stage_seconds={**record.stage_seconds, "key_check": round(key_seconds, 3)})
    paths = [target.uri(final) for _, final in data]
    if merged is not None:
        record = replace(
            record,
            rows_superseded=sum(result.rows_superseded for result in published),
            rows_updated=merged.rows_updated,
        )
        paths += merged.rewritten
    snapshot = tables.commit_files(
        table,
        paths,
        record.to_properties(),
        request.full_refresh,
        decryption,
        branch=None,
        removed=merged.replaced if merged is not None else (),
    )
    started = time.perf_counter()
    table_keys.index_snapshot(
        table, target, snapshot, primary_key, checked.new_keys, paths, request.full_refresh, decryption
    )
    log.info("Key checks %.3f s, key index %.3f s", key_seconds, time.perf_counter() - started)
    return snapshot


def _suppression_used(target: Location, run_key: str, result: ShardResult) -> int:
    """How many erased subjects' tokens a shard's pass dropped rows by (0 when it did not say)."""
    path = f"_staging/{run_key}/{result.shard.id}/_suppressed.json"
    return int(target.read_json(path)["tokens"]) if target.exists(path) else 0


def _delete_if_empty(target: Location, folder: str) -> None:
    if not target.fs.get_file_info(pafs.FileSelector(target.path(folder), allow_not_found=True)):
        target.delete_dir(folder)


def _reached(position: Any, results: list[ShardResult]) -> Any:
    """Where the run leaves its source: as the caller says (a window's end), else as its shards do."""
    return position if position is not None else sources.run_position(results)


def _run_record(pipeline: Pipeline, results: list[ShardResult], request: CommitRequest) -> RunRecord:
    """What a snapshot's summary says of its run, beyond what Iceberg records (files, bytes, time)."""
    totals = Counter[str]()
    nulls = Counter[str]()
    stages: dict[str, float] = {}
    for result in results:
        nulls.update(result.null_counts)
        for name in ("rows_in", "rows_stored", "rows_quarantined", "bytes_in"):
            totals[name] += getattr(result, name)
        for stage, value in result.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + value
    seconds = sum(result.seconds for result in results)
    now = datetime.now(UTC)
    began = datetime.fromisoformat(request.started_at or min(r.started_at for r in results))
    wall = max((now - began).total_seconds(), 1e-3)
    latest = max((datetime.fromisoformat(r.latest_event) for r in results if r.latest_event), default=None)
    fresh = [
        quality_rules.freshness(latest, rule, now)
        for rule in pipeline.spec.quality
        if isinstance(rule, Freshness)
    ]
    return RunRecord(
        dataset=pipeline.spec.name,
        run=request.run_key,
        dag_run=request.dag_run or "",
        interval=request.interval,
        started_at=began.isoformat(),
        contract_version=pipeline.contract.version,
        full_refresh=request.full_refresh,
        rows_in=totals["rows_in"],
        rows_stored=totals["rows_stored"],
        rows_quarantined=totals["rows_quarantined"],
        bytes_in=totals["bytes_in"],
        null_counts=dict(nulls),
        freshness=tuple(fresh),
        quarantine=tuple(path for r in results for path in [r.quarantine, *r.repeated] if path),
        inputs=tuple(
            {"source": source, "sha256": checksum} for source, checksum in sources.inputs_of(results)
        ),
        wall_seconds=round(wall, 3),
        processing_seconds=round(seconds, 3),
        stage_seconds={stage: round(value, 3) for stage, value in stages.items()},
        gb_per_hour=round(totals["bytes_in"] / 1e9 / (wall / 3600), 3),
        lineage=request.lineage or None,
        lag=request.lag or None,
        position=request.position or sources.run_position(results),
    )

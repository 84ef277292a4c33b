"""Storage: partitioned zstd Parquet written to staging, then published into the dataset's Iceberg table.

Layout under the table's location (local path or ``s3://``, through pyarrow's filesystems):

- ``_staging/<run>/<shard>/``: a process_shard attempt's files. Nothing reads them until commit
  adds them to the table, so a killed task leaves nothing visible; a retry starts over.
- ``data/<partition>=<value>/part-<run>-<shard>-<part>-<n>.parquet``: data files, each with every
  stored column (Iceberg derives a file's partition from its column statistics).
- ``metadata/``: Iceberg's; a run's snapshot is the commit point (see ``tables``).
- ``_quarantine/<run>/<shard>.parquet``: every rejected row, raw, with its reason; and
  ``_quarantine/<run>/<shard>-repeated-<key>-<n>.parquet``: the raw rows of stored rows whose key an
  earlier shard, or an earlier part of the same shard, already had (``unique`` holds across the
  run, see ``key_uniqueness``).
"""

from __future__ import annotations

import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from base_platform.files import Location
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.schema_contracts.conformance import DICTIONARY_RATIO
from base_platform.pipelines.spec import Security


def quarantine_schema(names: Iterable[str]) -> pa.Schema:
    """Raw values as bytes (they may not be UTF-8), the whole raw line for unsplittable rows, and
    the sealed raw record where a column is protected."""
    fields = [pa.field(name, pa.binary()) for name in names]
    return pa.schema(
        [
            *fields,
            ("_raw", pa.binary()),
            ("_reason", pa.string()),
            ("_source", pa.string()),
            ("_record", pa.int64()),
            ("_sealed", pa.binary()),
        ]
    )


class QuarantineWriter:
    """One Parquet file per shard attempt, opened on the first bad row.

    Nothing protected is written in clear: a protected column holds what a curated row would
    (its HMAC, its masked value, or nothing), and the raw values of the protected columns, with
    the whole raw line of an unsplittable row, are sealed in ``_sealed`` (see
    :func:`base_platform.pipelines.data_security.protection.seal`) for an authorised replay.
    """

    def __init__(
        self,
        location: Location,
        path: str,
        names: list[str],
        source: str,
        protection: Security | None = None,
        key: bytes | None = None,
    ) -> None:
        self.location, self.file, self.names, self.source = location, path, names, source
        self.schema = quarantine_schema(names)
        self.protected = {
            name: p for name, p in (protection.columns if protection else {}).items() if name in names
        }
        if self.protected and key is None:
            raise ValueError("quarantining protected columns needs the pipeline's key, to seal them")
        self.key = key
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.writer is None:
            self.location.fs.create_dir(self.file.rsplit("/", 1)[0], recursive=True)
            self.writer = pq.ParquetWriter(
                self.file, self.schema, filesystem=self.location.fs, compression="zstd"
            )
        self.writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def rows_of(self, raw: pa.RecordBatch, indices: pa.Array, reasons: pa.Array, first_record: int) -> None:
        """The raw values of the rows at ``indices``, with one reason each."""
        columns = {name: pc.take(raw.column(name), indices) for name in self.names}
        self._append(columns, None, reasons, pc.add(indices.cast(pa.int64()), first_record))

    def lines(self, rejects: list[tuple[bytes, str]]) -> None:
        """Whole raw lines that could not be split into columns."""
        columns = {name: pa.nulls(len(rejects), pa.binary()) for name in self.names}
        raw = pa.array([line for line, _ in rejects], pa.binary())
        self._append(columns, raw, pa.array([reason for _, reason in rejects], pa.string()), None)

    def keyed(self, keys: dict[str, pa.Array], reason: str) -> None:
        """Rows known by their key alone (text, never a protected column), with one reason."""
        count = len(next(iter(keys.values())))
        columns = {
            name: keys[name].cast(pa.binary()) if name in keys else pa.nulls(count, pa.binary())
            for name in self.names
        }
        self._append(columns, None, pa.array([reason] * count, pa.string()), None)

    def counted(self, count: int, reason: str) -> None:
        """Rows counted with their reason and nothing else: no value, raw or sealed, is kept."""
        if not count:
            return
        columns = {name: pa.nulls(count, pa.binary()) for name in self.names}
        reasons = pa.array([reason] * count, pa.string())
        self.write(
            pa.table(
                columns
                | {
                    "_raw": pa.nulls(count, pa.binary()),
                    "_reason": reasons,
                    "_source": pa.array([self.source] * count, pa.string()),
                    "_record": pa.nulls(count, pa.int64()),
                    "_sealed": pa.nulls(count, pa.binary()),
                }
            )
        )

    def _append(
        self,
        columns: dict[str, pa.Array | pa.ChunkedArray],
        raw: pa.Array | None,
        reasons: pa.Array,
        records: pa.Array | None,
    ) -> None:
        count = len(reasons)
        raw = pa.nulls(count, pa.binary()) if raw is None else raw
        sealed = pa.nulls(count, pa.binary())
        if self.protected:
            columns, raw, sealed = self._protected(columns, raw)
        self.write(
            pa.table(
                columns
                | {
                    "_raw": raw,
                    "_reason": reasons,
                    "_source": pa.array([self.source] * count, pa.string()),
                    "_record": pa.nulls(count, pa.int64()) if records is None else records,
                    "_sealed": sealed,
                }
            )
        )

    def _protected(
        self, columns: dict[str, pa.Array | pa.ChunkedArray], raw: pa.Array
    ) -> tuple[dict[str, pa.Array | pa.ChunkedArray], pa.Array, pa.Array]:
        """Protected columns as curated rows hold them, the raw line cleared, both sealed."""
        assert self.key is not None
        clear = {name: columns[name].to_pylist() for name in self.protected} | {"_raw": raw.to_pylist()}
        records = [
            {
                name: None if values[i] is None else values[i].decode("utf-8", "surrogateescape")
                for name, values in clear.items()
            }
            for i in range(len(raw))
        ]
        protected = {
            name: pa.array(protection.protect_raw(clear[name], rule, self.key), pa.binary())
            for name, rule in self.protected.items()
        }
        sealed = pa.array(protection.seal(records, self.key), pa.binary())
        return columns | protected, pa.nulls(len(raw), pa.binary()), sealed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # a null partition value's folder, as Hive and pyarrow name it
PENDING_ROWS = 1 << 20  # rows a writer holds for unfinished row groups, over all partitions
OPEN_FILES = 256  # files a writer keeps open; past that the oldest is finished first
WRITES_IN_FLIGHT = 2  # row groups handed to the writing thread and not yet written


@dataclass
class _OpenFile:
    writer: pq.ParquetWriter
    rows: int = 0


class PartitionedWriter:
    """Hive-partitioned zstd Parquet from a stream of batches, ``rows_per_file`` at most per file.

    Each kept row is copied once, straight into its partition's queue; pyarrow's dataset writer
    copies each partition out of a batch that the caller had already copied to drop its bad
    rows. Row groups collect up to 128 Ki rows per partition; memory and
    open files are bounded by ``PENDING_ROWS`` and ``OPEN_FILES`` whatever the number of partitions.
    Parquet encoding and compression run on a thread of their own (pyarrow releases the GIL
    there), so a shard alone on a machine checks its next batches meanwhile.
    """

    def __init__(
        self,
        location: Location,
        directory: str,
        schema: pa.Schema,
        partition_by: tuple[str, ...],
        basename: str,
        rows_per_file: int,
        encryption: Callable[[], Any] | None = None,
    ) -> None:
        self.location, self.directory, self.basename = location, directory, basename
        self.partition_by, self.rows_per_file, self.encryption = partition_by, rows_per_file, encryption
        self.file_schema = schema  # partition keys not in it (a day of a timestamp) are not stored
        self.group_rows = min(rows_per_file, 1 << 17)
        self.pending: dict[str, list[pa.RecordBatch]] = {}
        self.open: dict[str, _OpenFile] = {}
        self.written: list[str] = []
        self.dictionary: list[str] | None = None
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self.in_flight: deque[Future[object]] = deque()

    def __enter__(self) -> PartitionedWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """On an error the thread stops; what was written stays in staging, which a retry deletes."""
        self.io.shutdown(wait=True, cancel_futures=True)

    def write(self, batch: pa.RecordBatch, keep: pa.BooleanArray | None = None) -> None:
        """Queue the rows of ``batch`` where ``keep`` is true (all when None) under their partitions."""
        if self.dictionary is None:
            self.dictionary = dictionary_columns(batch.select(self.file_schema.names))
        for folder, rows in self._groups(batch, keep):
            queue = self.pending.setdefault(folder, [])
            queue.append(pa.RecordBatch.from_arrays(rows.columns, schema=self.file_schema))
            if _rows(queue) >= self.group_rows:
                self._flush(folder)
        while sum(map(_rows, self.pending.values())) > PENDING_ROWS:
            self._flush(max(self.pending, key=lambda folder: _rows(self.pending[folder])))

    def close(self) -> list[str]:
        """Write what is queued and close every file; returns the files written, sorted."""
        for folder in list(self.pending):
            self._flush(folder)
        for folder in list(self.open):
            self._finish(folder)
        self._wait(0)
        return sorted(self.written)

    def _groups(
        self, batch: pa.RecordBatch, keep: pa.BooleanArray | None
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """(folder, rows) per partition value of the kept rows; each row is copied once.

        Each partition's rows are taken into their own buffers: a slice of one copy of the whole
        batch would keep all of it alive while a rare partition's queue fills.
        """
        rows = None if keep is None or keep.false_count == 0 else pc.indices_nonzero(keep)
        if not self.partition_by:
            yield "", (batch if rows is None else batch.take(rows)).select(self.file_schema.names)
            return
        keys = batch.select(list(self.partition_by))
        keys = keys if rows is None else keys.take(rows)
        order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in self.partition_by])
        rows = order if rows is None else pc.take(rows, order)
        keys = keys.take(order)
        runs = [pc.run_end_encode(column).run_ends.to_pylist() for column in keys.columns]
        ends = sorted(set().union(*runs))  # a new partition wherever any of its columns changes
        columns = batch.select(self.file_schema.names)
        for start, end in zip([0, *ends], ends, strict=False):
            values = [column[start].cast(pa.string()).as_py() for column in keys.columns]
            folder = "/".join(
                f"{name}={HIVE_NULL if value is None else urllib.parse.quote(value, safe='')}"
                for name, value in zip(self.partition_by, values, strict=True)
            )
            yield folder, columns.take(rows.slice(start, end - start))

    def _flush(self, folder: str) -> None:
        table = pa.Table.from_batches(self.pending.pop(folder), schema=self.file_schema)
        while table.num_rows:
            file = self.open.get(folder) or self._open(folder)
            room = self.rows_per_file - file.rows
            row_groups = min(self.rows_per_file, 1 << 20)
            self._in_background(partial(file.writer.write_table, table.slice(0, room), row_groups))
            file.rows += min(room, table.num_rows)
            table = table.slice(room)
            if file.rows >= self.rows_per_file:
                self._finish(folder)

    def _finish(self, folder: str) -> None:
        self._in_background(self.open.pop(folder).writer.close)

    def _in_background(self, work: Callable[[], object]) -> None:
        """Hand ``work`` to the writing thread, which does everything in order; wait while it is behind."""
        self.in_flight.append(self.io.submit(work))
        self._wait(WRITES_IN_FLIGHT)

    def _wait(self, at_most: int) -> None:
        while len(self.in_flight) > at_most:
            self.in_flight.popleft().result()  # a failed write raises here

    def _open(self, folder: str) -> _OpenFile:
        if len(self.open) >= OPEN_FILES:
            self._finish(next(iter(self.open)))  # the oldest: dicts keep insertion order
        path = "/".join(part for part in (self.location.path(self.directory), folder) if part)
        path += f"/{self.basename}-{len(self.written)}.parquet"
        self.location.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        self.written.append(path)
        self.open[folder] = _OpenFile(
            pq.ParquetWriter(
                path,
                self.file_schema,
                filesystem=self.location.fs,
                compression=codecs(self.file_schema),
                use_dictionary=self.dictionary or False,
                encryption_properties=self.encryption() if self.encryption else None,
            )
        )
        return self.open[folder]


def _rows(batches: list[pa.RecordBatch]) -> int:
    return sum(batch.num_rows for batch in batches)


def codecs(schema: pa.Schema) -> dict[str, str]:
    """zstd, except for fixed-size binary columns (HMAC digests): random bytes zstd cannot shrink."""
    return {field.name: "none" if pa.types.is_fixed_size_binary(field.type) else "zstd" for field in schema}


def dictionary_columns(sample: pa.RecordBatch) -> list[str]:
    """Columns worth dictionary encoding, judged on the first batch: few distinct values.

    On a column of mostly distinct values (keys, HMACs, timestamps) the Parquet writer builds a
    dictionary only to abandon it; skipping that cuts the writer's CPU by about a third.
    """
    return [
        field.name
        for field, values in zip(sample.schema, sample.columns, strict=True)
        if not pa.types.is_nested(field.type)  # a list of digests: no distinct count, rarely repeated
        and pc.count_distinct(values).as_py() <= sample.num_rows * DICTIONARY_RATIO
    ]


def published_path(run_key: str, shard_id: str, staged: str) -> str:
    """Where commit publishes a shard's staged data file: the same path, out of ``_staging``."""
    return staged.removeprefix(f"_staging/{run_key}/{shard_id}/")


def replace_file(
    location: Location,
    path: str,
    batches: Iterator[pa.RecordBatch],
    encryption: Callable[[], Any] | None = None,
    into: str | None = None,
) -> None:
    """Replace one data file by ``batches`` of its schema, streamed beside it and renamed over it
    (or over ``into``, a copy the file itself stays beside: a merge's rewrite of a table file).

    No rows left, no file.
    """
    footer = pq.read_metadata(location.path(path), filesystem=location.fs)  # never encrypted
    destination = into or path
    folder, name = destination.rsplit("/", 1) if "/" in destination else ("", destination)
    beside = f"{folder}/_replacing-{name}" if folder else f"_replacing-{name}"
    location.delete_dir(beside)
    with PartitionedWriter(
        location,
        beside,
        footer.schema.to_arrow_schema(),
        (),
        name.removesuffix(".parquet"),
        footer.num_rows,  # one file: it can only shrink
        encryption,
    ) as writer:
        for batch in batches:
            if batch.num_rows:
                writer.write(batch)
        written = writer.close()
    if written:
        location.fs.move(written[0], location.path(destination))
    elif location.exists(destination):
        location.fs.delete_file(location.path(destination))
    location.delete_dir(beside)

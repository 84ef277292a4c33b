"""Storage: partitioned zstd Parquet written to staging, then published under a manifest.

Layout under the target URI (local path or ``s3://``, through pyarrow's filesystems):

- ``_staging/<run>/<shard>/``: a process_shard attempt's files. Readers ignore ``_``-prefixed
  paths (pyarrow, Spark, Trino), so a killed task leaves nothing visible; a retry starts over.
- ``<partition>=<value>/part-<run>-<shard>-<part>-<n>.parquet``: published data.
- ``_quarantine/<run>/<shard>.parquet``: every rejected row, raw, with its reason; and
  ``_quarantine/<run>/<shard>-repeated-<key>-<n>.parquet``: the raw rows of stored rows whose key an
  earlier shard, or an earlier part of the same shard, already had (``unique`` holds across the
  run, see ``run_unique``).
- ``_manifests/<run>.json``: the commit point, written by atomic rename; ``_manifests/_index.json``
  maps each committed input checksum to its run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from base_platform.pipelines.spec import resolve

AWS_CONN_VARIABLE = "BASE_PIPELINES_AWS_CONN_ID"
DICTIONARY_RATIO = 0.1  # at most one distinct value in ten rows
DIGEST_THREADS = 4
KEY_BUCKETS = 256  # key fingerprint files are indexed by their top byte
READ_BATCH_ROWS = 1 << 16


def s3_filesystem() -> pafs.S3FileSystem:
    """pyarrow's S3 client with the credentials, region and endpoint of the amazon provider's connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=os.environ.get(AWS_CONN_VARIABLE, "aws_default"))
    credentials = hook.get_credentials()
    return pafs.S3FileSystem(
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
        region=hook.conn_region_name or "us-east-1",
        endpoint_override=hook.conn_config.get_service_endpoint_url("s3"),
        allow_bucket_creation=False,
    )


@dataclass(frozen=True)
class Location:
    """A filesystem and a base path, from any URI pyarrow understands."""

    fs: pafs.FileSystem
    base: str

    @classmethod
    def of(cls, uri: str) -> Location:
        """Local paths directly; ``s3://`` through the amazon provider's connection."""
        resolved = resolve(uri)
        if resolved.startswith("s3://"):
            return cls(s3_filesystem(), resolved.removeprefix("s3://").rstrip("/"))
        fs, base = pafs.FileSystem.from_uri(resolved)
        return cls(fs, base.rstrip("/"))

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def exists(self, *parts: str) -> bool:
        found: bool = self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound
        return found

    def read_json(self, *parts: str) -> Any:
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return json.loads(stream.read())

    def write_json_atomically(self, data: Any, *parts: str) -> None:
        """Write beside the target, then rename over it: readers see the old or the new file."""
        final = self.path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        temporary = f"{final}.tmp-{os.getpid()}"
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())
        self.fs.move(temporary, final)

    def delete_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))


def quarantine_schema(names: Iterable[str]) -> pa.Schema:
    """Raw values as bytes (they may not be UTF-8), the whole raw line for unsplittable rows."""
    fields = [pa.field(name, pa.binary()) for name in names]
    return pa.schema(
        [
            *fields,
            ("_raw", pa.binary()),
            ("_reason", pa.string()),
            ("_source", pa.string()),
            ("_record", pa.int64()),
        ]
    )


class QuarantineWriter:
    """One Parquet file per shard attempt, opened on the first bad row."""

    def __init__(self, location: Location, path: str, names: list[str], source: str) -> None:
        self.location, self.file, self.names, self.source = location, path, names, source
        self.schema = quarantine_schema(names)
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

    def _append(
        self,
        columns: dict[str, pa.Array | pa.ChunkedArray],
        raw: pa.Array | None,
        reasons: pa.Array,
        records: pa.Array | None,
    ) -> None:
        count = len(reasons)
        self.write(
            pa.table(
                columns
                | {
                    "_raw": pa.nulls(count, pa.binary()) if raw is None else raw,
                    "_reason": reasons,
                    "_source": pa.array([self.source] * count, pa.string()),
                    "_record": pa.nulls(count, pa.int64()) if records is None else records,
                }
            )
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_partitioned(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    location: Location,
    directory: str,
    partition_by: tuple[str, ...],
    basename: str,
    rows_per_file: int,
    encryption: Any | None = None,
) -> list[str]:
    """Stream batches into hive-partitioned zstd Parquet; returns the files written."""
    written: list[str] = []
    first = next(batches, None)
    ds.write_dataset(
        itertools.chain([first] if first is not None else [], batches),
        base_dir=location.path(directory),
        schema=schema,
        format="parquet",
        filesystem=location.fs,
        partitioning=ds.partitioning(pa.schema([schema.field(name) for name in partition_by]), flavor="hive")
        if partition_by
        else None,
        basename_template=basename + "-{i}.parquet",
        file_options=ds.ParquetFileFormat().make_write_options(
            compression="zstd",
            use_dictionary=True if first is None else dictionary_columns(first),
            encryption_config=encryption,
        ),
        max_rows_per_file=rows_per_file,
        max_rows_per_group=min(rows_per_file, 1 << 20),
        min_rows_per_group=min(rows_per_file, 1 << 17),
        existing_data_behavior="overwrite_or_ignore",
        file_visitor=lambda written_file: written.append(written_file.path),
    )
    return sorted(written)


def dictionary_columns(sample: pa.RecordBatch) -> list[str]:
    """Columns worth dictionary encoding, judged on the first batch: few distinct values.

    On a column of mostly distinct values (keys, HMACs, timestamps) the Parquet writer builds a
    dictionary only to abandon it; skipping that cuts the writer's CPU by about a third.
    """
    return [
        field.name
        for field, values in zip(sample.schema, sample.columns, strict=True)
        if pc.count_distinct(values).as_py() <= sample.num_rows * DICTIONARY_RATIO
    ]


def file_digests(location: Location, paths: list[str]) -> list[tuple[str, int]]:
    """:func:`file_digest` of each path, a few at a time (hashlib and pyarrow's reads release the GIL)."""
    with ThreadPoolExecutor(max_workers=DIGEST_THREADS) as pool:
        return list(pool.map(lambda path: file_digest(location, path), paths))


def file_digest(location: Location, path: str) -> tuple[str, int]:
    """SHA-256 and size of a file, streamed."""
    digest, size = hashlib.sha256(), 0
    with location.fs.open_input_stream(path) as stream:
        while chunk := stream.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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


def read_file(
    location: Location, path: str, decryption: Any | None = None, columns: list[str] | None = None
) -> pa.Table:
    """One Parquet file as written (no partition columns inferred from its folder names)."""
    with location.fs.open_input_file(location.path(path)) as source:
        return pq.ParquetFile(source, decryption_properties=decryption).read(columns=columns)


def read_batches(location: Location, path: str, decryption: Any | None = None) -> Iterator[pa.RecordBatch]:
    """One Parquet file's rows, ``READ_BATCH_ROWS`` at a time: a big file never sits in memory whole."""
    with location.fs.open_input_file(location.path(path)) as source:
        file = pq.ParquetFile(source, decryption_properties=decryption)
        yield from file.iter_batches(batch_size=READ_BATCH_ROWS)


def replace_file(
    location: Location,
    path: str,
    batches: Iterator[pa.RecordBatch],
    encryption: Any | None = None,
) -> None:
    """Replace one data file by ``batches`` of its schema, streamed beside it and renamed over it.

    No rows left, no file.
    """
    footer = pq.read_metadata(location.path(path), filesystem=location.fs)  # never encrypted
    folder, name = path.rsplit("/", 1)
    beside = f"{folder}/_replacing-{name}"
    location.delete_dir(beside)
    written = write_partitioned(
        (batch for batch in batches if batch.num_rows),
        footer.schema.to_arrow_schema(),
        location,
        beside,
        (),
        name.removesuffix(".parquet"),
        footer.num_rows,  # one file: it can only shrink
        encryption,
    )
    if written:
        location.fs.move(written[0], location.path(path))
    else:
        location.fs.delete_file(location.path(path))
    location.delete_dir(beside)


def row_count(location: Location, path: str) -> int:
    """Rows of a Parquet file, from its footer (readable also when columns are encrypted)."""
    rows: int = pq.read_metadata(location.path(path), filesystem=location.fs).num_rows
    return rows

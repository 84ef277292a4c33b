"""``kind: media``: files of one media kind (documents, images, GeoJSON, time series), a row each
(a row per feature of a GeoJSON FeatureCollection).

``plan`` lists the files the dataset's lineage does not hold (by SHA-256, each file's own) and
groups them, in path order, into shards of about ``shard_mb`` and at most ``files_per_shard``,
so many small files make few tasks and a drop of them still runs in parallel. ``read`` turns
each file of its shard into its rows (``pipelines/multimodal_processing``); a file that cannot be
read, is too big (``max_file_mb``) or too slow (``max_seconds``), or fails in any way, is a reject
with its reason, so it is quarantined and counted, and the shard goes on; so is each record of a
file of several (a feature) that fails, with the file's path and the record's reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from base_platform.files import Location, file_digests
from base_platform.pipelines.data_ingestion.decoding import RawBatch, Reject, raw_schema
from base_platform.pipelines.data_ingestion.sources import Resume, span_shard
from base_platform.pipelines.data_ingestion.sources.files import matching_files
from base_platform.pipelines.multimodal_processing import media_kinds
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.spec import MediaSource, Pipeline

BATCH_FILES = 256  # rows per batch handed to the contract stage


def media_source(pipeline: Pipeline) -> MediaSource:
    source = pipeline.spec.source
    assert isinstance(source, MediaSource), f"{pipeline.spec.name} reads {source.kind}, not media"
    return source


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    source = media_source(pipeline)
    extensions = media_kinds.EXTENSIONS[source.format]

    def wanted(name: str) -> bool:
        return fnmatch.fnmatch(name, source.glob) and name.lower().endswith(extensions)

    location, files = matching_files(uri, wanted)
    paths = [path for path, _ in files]
    pending = [
        (path, digest, size)
        for path, (digest, size) in zip(paths, file_digests(location, paths), strict=True)
        if digest not in resume.inputs
    ]
    groups: list[list[Any]] = [[]]
    budget, filled = source.shard_mb << 20, 0
    for entry in pending:
        if groups[-1] and (filled + entry[2] > budget or len(groups[-1]) >= source.files_per_shard):
            groups.append([])
            filled = 0
        groups[-1].append(list(entry))
        filled += entry[2]
    return [span_shard(i, "media", uri, {"files": group}) for i, group in enumerate(g for g in groups if g)]


def side_writer(pipeline: Pipeline) -> media_kinds.SideWriter:
    """Store a file beside the dataset (named by its content hash); returns its relative path.

    It is written again when there already: the same bytes, and a fresh time, so orphan removal's
    grace covers this run in flight as it covers a new file."""
    location = Location.of(pipeline.spec.storage.uri)

    def write(name: str, data: bytes) -> str:
        location.write_atomically(data, media_kinds.SIDE_FOLDER, name)
        return f"{media_kinds.SIDE_FOLDER}/{name}"

    return write


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    source = media_source(pipeline)
    names = list(pipeline.contract.names)
    location = Location.of(shard.source)
    side = side_writer(pipeline)
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for path, _, size in (shard.span or {}).get("files", []):
        if size > source.max_file_mb << 20:
            rejects.append(Reject(path.encode(), f"larger than max_file_mb ({source.max_file_mb} MB)"))
        else:
            with location.fs.open_input_stream(path) as stream:
                data = stream.read()
            try:
                with media_kinds.time_limit(source.max_seconds):
                    found = media_kinds.extract(source.format, data, path, source, side)
                rows += found.rows
                rejects += [Reject(path.encode(), why) for why in found.rejects]
            except media_kinds.TooSlow as exc:
                rejects.append(Reject(path.encode(), str(exc)))
            except Exception as exc:  # any crafted file: its own failure, never the batch's
                rejects.append(Reject(path.encode(), media_kinds.reason(exc)))
        if len(rows) + len(rejects) >= BATCH_FILES:
            yield _batch(rows, rejects, names)
            rows, rejects = [], []
    if rows or rejects:
        yield _batch(rows, rejects, names)


def _batch(rows: list[dict[str, Any]], rejects: list[Reject], names: list[str]) -> RawBatch:
    columns = [pa.array([_raw(row.get(name)) for row in rows], pa.binary()) for name in names]
    return RawBatch(pa.RecordBatch.from_arrays(columns, schema=raw_schema(names)), rejects)


def _raw(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()

"""Where a pipeline's rows come from: one module per ``source.kind``, each with the same two calls.

- ``plan(pipeline, uri, resume) -> list[Shard]``: the slices to read now, after what ``resume``
  says the dataset's ``main`` already holds (files' checksums, or a cursor's high-water mark);
- ``read(pipeline, shard) -> Iterator[RawBatch]``: one slice's raw values in batches for the
  contract, quality, security and storage stages, which never learn where the rows came from.
  A closed slice is read the same on a retry; an open one (a stream's: what is there to deliver)
  is closed by what its shard read (``upto``).

The position a run reached is the furthest its shards read (a cursor column's highest value, or
the last entry id a batch reports), kept in the snapshot's summary (``base.position``) and read
back by the next run's ``discover``. A new kind
(Kafka: its offsets as the position) is a module here and a model in ``spec``; the engine does not
change.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from base_platform.pipelines.run_records import Shard, ShardResult, highest
from base_platform.pipelines.spec import Pipeline

if TYPE_CHECKING:
    from base_platform.pipelines.data_ingestion.decoding import RawBatch

SOURCE_MODULES = {
    "files": "base_platform.pipelines.data_ingestion.sources.files",
    "http": "base_platform.pipelines.data_ingestion.sources.http",
    "postgres": "base_platform.pipelines.data_ingestion.sources.postgres",
    "redis_stream": "base_platform.pipelines.data_ingestion.sources.redis_stream",
    "media": "base_platform.pipelines.data_ingestion.sources.media",
}


@dataclass(frozen=True)
class Resume:
    """What the dataset's published lineage has read: input checksums (files), or the position
    (JSON) of an incremental source: a cursor's high-water mark (an int, or an ISO 8601 date or
    time), or a stream's last entry id (``[ms, seq]``)."""

    inputs: Mapping[str, str] = field(default_factory=dict)
    position: Any = None


class SourceKind(Protocol):
    def plan(self, pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]: ...

    def read(self, pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]: ...


def kind_of(pipeline: Pipeline) -> SourceKind:
    """The module of the pipeline's ``source.kind``, imported only when a task needs it."""
    return cast(SourceKind, importlib.import_module(SOURCE_MODULES[pipeline.spec.source.kind]))


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    return kind_of(pipeline).plan(pipeline, uri, resume)


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    return kind_of(pipeline).read(pipeline, shard)


def as_position(value: Any) -> Any:
    """A cursor value as JSON: ints stay, dates and times become ISO 8601."""
    return value.isoformat() if isinstance(value, date | datetime) else value


def span_shard(index: int, kind: str, source: str, span: Mapping[str, Any]) -> Shard:
    """A shard of a kind other than files: its checksum is its span's, so its id is stable."""
    digest = hashlib.sha256(json.dumps([kind, source, span], sort_keys=True).encode()).hexdigest()
    return Shard(index, source, digest, 0, kind=kind, span=dict(span))


def run_position(results: Iterable[ShardResult]) -> Any:
    """Where a run's source stands once it commits: the furthest of what its shards planned to
    reach (``upto``), started after (``after``), and read; None for files."""
    return highest(
        value
        for result in results
        for value in (result.position, *((result.shard.span or {}).get(k) for k in ("after", "upto")))
    )


def inputs_of(results: Iterable[ShardResult]) -> list[tuple[str, str]]:
    """(source, checksum) of what a run read, once each: a shard's file (or span), or each file of
    a shard that groups many (``media``), so a later run skips exactly the files read."""
    found: dict[tuple[str, str], None] = {}
    for result in results:
        grouped = (result.shard.span or {}).get("files") if result.shard.kind == "media" else None
        for source, checksum in (
            [(p, c) for p, c, _ in grouped] if grouped else [(result.shard.source, result.shard.checksum)]
        ):
            found[(source, checksum)] = None
    return list(found)


def nothing_new(results: Iterable[ShardResult]) -> bool:
    """A run of an incremental source that read no rows: nothing to commit. (A run of files that
    found an empty file, or media files of no rows, such as an empty FeatureCollection, commits
    it, so the file is marked read.)"""
    return all(result.shard.kind not in ("files", "media") and result.rows_in == 0 for result in results)

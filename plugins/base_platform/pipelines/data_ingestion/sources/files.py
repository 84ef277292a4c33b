"""``kind: files``: CSV, NDJSON or Parquet files in a folder or under an S3 prefix.

A file whose checksum the dataset's lineage holds is not read again; a big CSV or NDJSON file is
cut at record boundaries into shards of about ``shard_mb``.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Callable, Iterator

import pyarrow.fs as pafs

from base_platform.files import Location, file_digests, resolve
from base_platform.pipelines.data_ingestion import decoding
from base_platform.pipelines.data_ingestion.decoding import RawBatch
from base_platform.pipelines.data_ingestion.sources import Resume
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.spec import FileSource, Pipeline


class NoSource(ValueError):
    """The folder or prefix to read does not exist."""


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    """Input files in a stable (path) order, a shard each (or per piece of a big one)."""
    source = file_source(pipeline)
    location, files = matching_files(uri, lambda name: fnmatch.fnmatch(name, source.glob))
    scheme = resolve(uri).split("://", 1)[0] + "://" if "://" in uri else ""
    cuts = [_record_cuts(source, size) for _, size in files]
    digests = file_digests(location, [path for path, _ in files], [c.feed if c else None for c in cuts])
    shards: list[Shard] = []
    for (path, _), (digest, size), file_cuts in zip(files, digests, cuts, strict=True):
        if digest in resume.inputs:
            continue
        bounds = [0, *(c for c in file_cuts.cuts if c < size), size] if file_cuts else [0, size]
        whole = len(bounds) == 2
        for start, end in itertools.pairwise(bounds):
            shards.append(
                Shard(len(shards), scheme + path, digest, end - start, start, None if whole else end)
            )
    return shards


def matching_files(uri: str, wanted: Callable[[str], bool]) -> tuple[Location, list[tuple[str, int]]]:
    """The folder or prefix, and (path, size) of each file under it whose name is ``wanted``, by path."""
    location = Location.of(uri)
    if not location.exists():
        raise NoSource(f"source {resolve(uri)} does not exist")
    selector = pafs.FileSelector(location.base, recursive=True)
    found = sorted(
        (info.path, info.size)
        for info in location.fs.get_file_info(selector)
        if info.type == pafs.FileType.File and wanted(info.base_name)
    )
    return location, found


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    names = list(pipeline.contract.names)
    return decoding.read_uri(shard.source, names, file_source(pipeline), shard.start, shard.end)


def file_source(pipeline: Pipeline) -> FileSource:
    source = pipeline.spec.source
    assert isinstance(source, FileSource), f"{pipeline.spec.name} reads {source.kind}, not files"
    return source


def _record_cuts(source: FileSource, size: int) -> decoding.RecordCuts | None:
    """Where to split a file too big for one shard; Parquet files are never split."""
    every = source.shard_mb << 20
    if size <= every or source.format == "parquet":
        return None
    return decoding.RecordCuts(every, quoted=source.format == "csv")

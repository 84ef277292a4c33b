"""The s3:// path, end to end against moto's S3 server on 127.0.0.1 (through the amazon provider)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from base_platform.pipelines.data_ingestion import decoding
from base_platform.pipelines.data_ingestion.sources.files import file_source
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest
from base_platform.pipelines.spec import pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import KEY, with_source


@pytest.mark.slow
def test_a_pipeline_reads_and_publishes_on_s3(s3: object, tmp_path: Path) -> None:
    pipeline = pipeline_named("transactions")
    summary = generate(2000, "csv", 0.05, tmp_path / "in", files=2)
    for name in summary.files:
        s3.upload_file(str(tmp_path / "in" / name), "raw", f"incoming/{name}")  # type: ignore[attr-defined]

    shards = engine.discover(pipeline, "s3://raw/incoming", "s3://curated/transactions", False)
    assert [s.source for s in shards] == [f"s3://raw/incoming/{n}" for n in summary.files]
    results = [engine.process_shard(pipeline, s, "r1", "s3://curated/transactions", KEY) for s in shards]
    manifest = engine.commit(
        pipeline, CommitRequest("r1", tuple(results), "s3://curated/transactions", {}, key=KEY)
    )

    assert manifest.rows_in == 2000 == manifest.rows_stored + manifest.rows_quarantined
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="curated")["Contents"]]  # type: ignore[attr-defined]
    table = tables.load("transactions")
    assert table is not None and table.metadata_location.startswith("s3://curated/transactions/metadata/")
    data = [task.file.file_path for task in table.scan().plan_files()]
    assert len(data) == manifest.files and {p.removeprefix("s3://curated/") for p in data} <= set(keys)
    assert table.scan().to_arrow().num_rows == manifest.rows_stored
    assert not any("_staging" in key for key in keys), keys
    assert engine.discover(pipeline, "s3://raw/incoming", "s3://curated/transactions", False) == []


@pytest.mark.slow
def test_a_big_s3_object_is_split_into_ranged_shards(s3: object, tmp_path: Path) -> None:
    pipeline = with_source(pipeline_named("transactions"), shard_mb=1)
    summary = generate(9000, "csv", 0.05, tmp_path / "in")  # about 1.5 MB: two shards
    s3.upload_file(str(tmp_path / "in" / summary.files[0]), "raw", "incoming/big.csv")  # type: ignore[attr-defined]

    shards = engine.discover(pipeline, "s3://raw/incoming", "s3://curated/transactions", False)
    assert len(shards) == 2 and shards[0].end == shards[1].start and shards[1].end == summary.bytes
    results = [engine.process_shard(pipeline, s, "r1", "s3://curated/transactions", KEY) for s in shards]
    manifest = engine.commit(
        pipeline, CommitRequest("r1", tuple(results), "s3://curated/transactions", {}, key=KEY)
    )
    assert manifest.rows_in == 9000 and manifest.rows_quarantined == summary.corrupt
    assert manifest.inputs == ({"source": "s3://raw/incoming/big.csv", "sha256": shards[0].checksum},)


class _Requests(logging.Handler):
    """The request lines moto's server logs (through werkzeug)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.slow
def test_s3_reads_come_in_a_few_big_gets(s3: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read of an S3 file is a GET: the CSV reader's small reads come out of BLOCK_BYTES buffers."""
    monkeypatch.setattr(decoding, "BLOCK_BYTES", 1 << 20)
    monkeypatch.setattr(decoding, "READ_BYTES", 64 << 10)
    summary = generate(20_000, "csv", 0.0, tmp_path / "in")  # about 3.4 MB: 53 reads of 64 KB
    s3.upload_file(str(tmp_path / "in" / summary.files[0]), "raw", "incoming/big.csv")  # type: ignore[attr-defined]
    pipeline = pipeline_named("transactions")
    requests = _Requests()
    server_log = logging.getLogger("werkzeug")
    monkeypatch.setattr(server_log, "level", logging.INFO)
    server_log.addHandler(requests)
    try:
        for end in (None, summary.bytes):  # the whole object, and the same bytes as a piece
            requests.lines.clear()
            batches = decoding.read_uri(
                "s3://raw/incoming/big.csv", list(pipeline.contract.names), file_source(pipeline), 0, end
            )
            assert sum(raw.batch.num_rows for raw in batches) == 20_000
            gets = [line for line in requests.lines if "GET /raw/incoming/big.csv" in line]
            assert 1 <= len(gets) <= summary.bytes // (1 << 20) + 2, gets
    finally:
        server_log.removeHandler(requests)

"""Files made to break a reader: each is quarantined with its reason, the good file beside it is
read, and the shard goes on (before, any of these failed the shard on every try)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.mediagen import generate

PIPELINES = {"document": "documents", "image": "images", "geojson": "parcels", "timeseries": "sensor_series"}


@pytest.fixture(autouse=True)
def _root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def pdf_pages(count: int) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(count):
        writer.add_blank_page(width=72, height=72)
    sink = io.BytesIO()
    writer.write(sink)
    return sink.getvalue()


CRAFTED: dict[str, tuple[str, bytes, str]] = {  # kind: (file name, bytes, the reason's start)
    "image": ("bomb.png", png_header(20_000, 10_000), "cannot be read: DecompressionBombError"),
    "geojson": ("deep.geojson", b"[" * 100_000 + b"]" * 100_000, "nested 100000 deep"),
    "timeseries": ("broken.parquet", b"PAR1" + b"\0" * 64 + b"PAR1", "cannot be read: OSError"),
    "document": ("long.pdf", pdf_pages(3), "3 pages, more than max_pages (2)"),
}


def rows_and_reasons(pipeline: Pipeline, folder: Path) -> tuple[int, list[str]]:
    (shard,) = sources.plan(pipeline, str(folder), sources.Resume())
    rows, reasons = 0, []
    for batch in sources.read(pipeline, shard):
        rows += batch.batch.num_rows
        reasons += [reject.reason for reject in batch.rejects]
    return rows, reasons


def with_limits(kind: str, **limits: Any) -> Pipeline:
    pipeline = pipeline_named(PIPELINES[kind])
    source = pipeline.spec.source.model_copy(update=limits)
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"source": source})})


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_file_is_quarantined_with_its_reason_and_the_good_one_is_read(
    kind: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    generate(kind, 1, 0.0, folder)
    name, data, reason = CRAFTED[kind]
    (folder / name).write_bytes(data)
    rows, reasons = rows_and_reasons(with_limits(kind, max_pages=2, glob="*"), folder)
    assert rows == 1 and len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_a_file_over_the_size_or_time_limit_is_quarantined_unread(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    generate("timeseries", 2, 0.0, folder)
    (folder / "huge.csv").write_bytes(b"timestamp,value\n" + b"2026-01-01T00:00:00Z,1\n" * 60_000)
    rows, reasons = rows_and_reasons(with_limits("timeseries", max_file_mb=1), folder)
    assert rows == 2 and reasons == ["larger than max_file_mb (1 MB)"]
    rows, reasons = rows_and_reasons(with_limits("timeseries", max_seconds=1e-6), folder)
    assert (
        rows == 0
        and all(r == "took longer than max_seconds (1e-06 s)" for r in reasons)
        and len(reasons) == 3
    )

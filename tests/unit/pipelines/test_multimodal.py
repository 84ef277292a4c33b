"""multimodal_processing through the real engine: each kind over a generated mix with broken
files accounts for every file (stored + quarantined = in), finds what the generator planted, and
leaves no GPS tag or unprotected e-mail or phone number in any byte it wrote."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_storage import quarantine, tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.mediagen import generate
from tests.unit.pipelines.test_engine import KEY

REASONS = {
    "document": "not a readable PDF",
    "image": "not a readable image",
    "geojson": "not a GeoJSON geometry",
    "timeseries": "not a series of timestamp,value",
}
PIPELINES = {"document": "documents", "image": "images", "geojson": "parcels", "timeseries": "sensor_series"}


@pytest.fixture(autouse=True)
def _root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))


def run(pipeline: Pipeline, source: Path, target: Path, run_key: str) -> tuple[RunRecord, int]:
    shards = engine.discover(pipeline, str(source), str(target), False)
    results = [engine.process_shard(pipeline, shard, run_key, str(target), KEY) for shard in shards]
    record = engine.commit(
        pipeline,
        CommitRequest(run_key, tuple(results), str(target), {"start": None, "end": None}, False, key=KEY),
    )
    return record, len(shards)


def stored(name: str) -> pa.Table:
    table = tables.load(name)
    assert table is not None
    return table.scan().to_arrow()


@pytest.mark.parametrize("kind", list(PIPELINES))
@pytest.mark.slow
def test_every_file_is_stored_or_quarantined_with_its_reason(kind: str, tmp_path: Path) -> None:
    pipeline = pipeline_named(PIPELINES[kind])
    source = pipeline.spec.source.model_copy(update={"files_per_shard": 64})  # several shards
    pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"source": source})})
    made = generate(kind, 300, 0.04, tmp_path / "in")
    record, shards = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    assert record.rows_in == made["files"] == 300 and shards > 1
    assert (record.rows_stored, record.rows_quarantined) == (made["stored"], made["quarantined"]), record
    rows = {Path(row["file"]).name: row for row in stored(PIPELINES[kind]).to_pylist()}
    expected = {name: e for name, e in made["expected"].items() if not e.get("quarantined")}
    assert set(rows) == set(expected)
    check = {"document": _document, "image": _image, "geojson": _geo, "timeseries": _series}[kind]
    for name, row in rows.items():
        check(row, expected[name], pipeline)

    reasons = {
        Path(row["_raw"]).name: row["_reason"]
        for row in quarantine.records(pipeline, str(tmp_path / "out"), KEY)
    }
    broken = {name for name, e in made["expected"].items() if e.get("quarantined")}
    assert set(reasons) == broken and all(REASONS[kind] in why for why in reasons.values()), reasons
    again = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    assert again == []  # each file is read once


def _document(row: dict[str, Any], expected: dict[str, Any], pipeline: Pipeline) -> None:
    assert row["pages"] == expected["pages"] and row["language"] == expected["language"]
    assert row["title"].startswith("Report ") and row["created"].year == 2026
    assert "@" not in row["text"]
    assert row["emails"] is None or all(len(digest) == 32 for digest in row["emails"])  # HMAC-SHA256 each


def _image(row: dict[str, Any], expected: dict[str, Any], pipeline: Pipeline) -> None:
    from PIL import Image

    assert (row["width"], row["height"]) == (expected["width"], expected["height"])
    assert row["gps_removed"] is expected["gps"]
    if expected["gps"]:
        assert json.loads(row["exif"]) == {"Make": "BenchCam", "Model": "Model 7"}
    with Image.open(_beside(pipeline, row["thumbnail"])) as thumb:
        assert max(thumb.size) <= 128 and not thumb.getexif()


def _geo(row: dict[str, Any], expected: dict[str, Any], pipeline: Pipeline) -> None:
    import shapely

    geometry = shapely.from_wkb(row["geometry"])
    assert geometry.is_valid and row["crs"] == "EPSG:3035" and row["area"] > 0
    assert row["repaired"] is expected.get("repaired", False)
    assert (
        2_500_000 < row["centroid_x"] < 5_500_000 and 1_000_000 < row["centroid_y"] < 4_500_000
    )  # Europe, LAEA
    assert row["min_x"] <= row["centroid_x"] <= row["max_x"] or row["repaired"]


def _series(row: dict[str, Any], expected: dict[str, Any], pipeline: Pipeline) -> None:
    assert (row["duplicates"], row["out_of_order"], row["gaps"]) == (
        expected["duplicates"],
        expected["out_of_order"],
        expected["gaps"],
    )
    resampled = pq.read_table(_beside(pipeline, row["resampled"]))
    times = resampled.column("timestamp").to_pylist()
    assert times == sorted(times) and resampled.num_rows == row["buckets"]
    hours = row["end"].timestamp() // 3600 - row["start"].timestamp() // 3600 + 1
    assert row["buckets"] + row["gaps"] == hours and row["points_in"] >= row["buckets"]


def _beside(pipeline: Pipeline, relative: str) -> io.BytesIO:
    from base_platform.files import resolve

    return io.BytesIO((Path(resolve(pipeline.spec.storage.uri)) / relative).read_bytes())


@pytest.mark.slow
def test_no_gps_tag_or_unprotected_email_or_phone_reaches_a_stored_byte(tmp_path: Path) -> None:
    planted: list[str] = []
    for kind in ("document", "image"):
        made = generate(kind, 120, 0.05, tmp_path / f"in-{kind}")
        planted += made["planted"]
        run(pipeline_named(PIPELINES[kind]), tmp_path / f"in-{kind}", tmp_path / f"out-{kind}", "run-1")
    assert any("@" in value for value in planted) and any(value.startswith("+49") for value in planted)
    written = [path for path in (tmp_path / "root").rglob("*") if path.is_file()]
    written += [path for path in tmp_path.glob("out-*/**/*") if path.is_file()]
    assert any(path.suffix == ".webp" for path in written)
    for path in written:
        data = path.read_bytes()
        for value in planted:
            assert value.encode() not in data, f"{value} in {path}"
            assert value.encode("utf-16-be") not in data, f"{value} in {path}"


def test_float64_and_binary_columns_conform_as_typed() -> None:
    from base_platform.pipelines.row_findings import Findings
    from base_platform.pipelines.schema_contracts import conformance
    from base_platform.pipelines.spec import Contract

    contract = Contract.model_validate(
        {
            "name": "t",
            "version": "1.0.0",
            "primary_key": ["id"],
            "columns": [
                {"name": "id", "type": "string", "nullable": False},
                {"name": "x", "type": "float64"},
                {"name": "wkb", "type": "binary", "nullable": False},
            ],
        }
    )
    raw = pa.RecordBatch.from_arrays(
        [
            pa.array([b"a", b"b", b"c", b"d"]),
            pa.array([b"1.5", b"-2e3", b"abc", None]),
            pa.array([b"\x01\xff\x00", b"\xc3(", None, b"ok"]),  # not UTF-8, and that is fine
        ],
        names=["id", "x", "wkb"],
    )
    findings = Findings(4)
    typed = conformance.conform(raw, contract, findings)
    assert typed.column("x").to_pylist()[:2] == [1.5, -2000.0]
    assert typed.column("wkb").to_pylist() == [b"\x01\xff\x00", b"\xc3(", None, b"ok"]
    assert findings.bad().to_pylist() == [False, False, True, False]  # "abc" is no float; null wkb is missing


@pytest.mark.parametrize(
    ("source", "contract", "message"),
    [
        ("{kind: media, format: timeseries, uri: in}", "", "`frequency` is required for format: timeseries"),
        ("{kind: media, format: image, uri: in, frequency: 1h}", "", "and only there"),
        ("{kind: media, format: geojson, uri: in, crs: WGS84}", "", "source.crs"),
        ("{kind: media, format: audio, uri: in}", "", "source.format"),
        (
            "{kind: media, format: image, uri: in}",
            "  - {name: pages, type: int64}\n",
            "'pages' is not one a image gives",
        ),
    ],
)
def test_a_bad_media_spec_names_file_and_key(
    tmp_path: Path, source: str, contract: str, message: str
) -> None:
    from base_platform.catalog.loader import CatalogError
    from base_platform.pipelines.spec import load_pipeline

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "contracts").mkdir()
    columns = "".join(
        f"  - {column}\n"
        for column in (
            "{name: file, type: string}",
            "{name: sha256, type: string, nullable: false}",
            "{name: bytes, type: int64}",
        )
    )
    (tmp_path / "contracts" / "m.yaml").write_text(
        f"name: m\nversion: 1.0.0\nprimary_key: [sha256]\ncolumns:\n{columns}{contract}"
    )
    path = tmp_path / "pipelines" / "m.yaml"
    path.write_text(f"name: m\ncontract: m\nsource: {source}\nstorage: {{uri: out}}\n")
    with pytest.raises(CatalogError) as error:
        load_pipeline(path)
    assert str(path) in str(error.value) and message in str(error.value), str(error.value)


def test_a_parquet_series_is_read_like_a_csv_one(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from base_platform.pipelines.data_ingestion.sources.media import media_source
    from base_platform.pipelines.multimodal_processing import media_kinds

    source = media_source(pipeline_named("sensor_series"))
    times = [
        datetime(2026, 11, 1, hour, minute, tzinfo=UTC) for hour, minute in ((0, 5), (2, 0), (0, 50), (2, 0))
    ]
    sink = io.BytesIO()
    pq.write_table(pa.table({"timestamp": times, "value": [1.0, 4.0, 3.0, 6.0]}), sink)
    written: dict[str, bytes] = {}

    def side(name: str, data: bytes) -> str:
        written[name] = data
        return name

    (row,) = media_kinds.extract("timeseries", sink.getvalue(), "s/pump-7.parquet", source, side).rows
    assert (row["series"], row["points_in"], row["out_of_order"], row["duplicates"]) == (
        "pump-7",
        "4",
        "1",
        "1",
    )
    assert (row["buckets"], row["gaps"], row["mean"]) == ("2", "1", "3.5")  # hours 0 and 2, mean of 2 and 5
    resampled = pq.read_table(io.BytesIO(next(iter(written.values()))))
    assert resampled.column("value").to_pylist() == [2.0, 5.0]

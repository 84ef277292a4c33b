"""A GeoJSON FeatureCollection, the usual shape of a GeoJSON file, gives a row per feature: each
feature counted, the broken ones quarantined with their reasons, the others stored under the
key (file, feature index); before, the whole collection was quarantined and nothing counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.data_storage import quarantine, tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import Pipeline, pipeline_named
from tests.unit.pipelines.test_engine import KEY

SQUARE = [[[10.0, 50.0], [10.01, 50.0], [10.01, 50.01], [10.0, 50.01], [10.0, 50.0]]]
FOLDED = [
    [[10.0, 50.0], [10.01, 50.01], [10.02, 50.02], [10.01, 50.01], [10.0, 50.0]]
]  # crosses back onto itself


def feature(geometry: Any, properties: Any = None) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


POLYGON = {"type": "Polygon", "coordinates": SQUARE}
FEATURES: list[tuple[Any, str | None]] = [  # (feature, the reason's start if quarantined)
    (feature(POLYGON, {"parcel": "P-1"}), None),
    (feature({"type": "Polygon", "coordinates": FOLDED}), "feature 1: invalid geometry that make_valid"),
    ({"type": "Feature", "properties": {}}, "feature 2: a Feature without a geometry"),
    (
        feature({"type": "Circle", "coordinates": [10, 50]}),
        "feature 3: not a GeoJSON geometry: type 'Circle'",
    ),
    (feature(feature(POLYGON)), "feature 4: not a GeoJSON geometry: type 'Feature'"),
    (feature(POLYGON, ["not", "an", "object"]), "feature 5: a Feature's properties must be an object"),
    ("a string", "feature 6: not a GeoJSON geometry: type 'str'"),
    (feature({"type": "Point", "coordinates": [10.5, 50.5]}), None),
    (
        feature({"type": "Polygon", "coordinates": [[[10, 50], [11, 51]]]}),
        "feature 8: not a GeoJSON geometry",
    ),
]


@pytest.fixture(autouse=True)
def _root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))


def collection(features: list[Any]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def read_all(pipeline: Pipeline, folder: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    (shard,) = sources.plan(pipeline, str(folder), sources.Resume())
    rows: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for batch in sources.read(pipeline, shard):
        rows += pa.Table.from_batches([batch.batch]).to_pylist()
        rejects += [(reject.raw.decode(), reject.reason) for reject in batch.rejects]
    return rows, rejects


def run(pipeline: Pipeline, source: Path, target: Path) -> RunRecord:
    shards = engine.discover(pipeline, str(source), str(target), False)
    results = [engine.process_shard(pipeline, shard, "run-1", str(target), KEY) for shard in shards]
    return engine.commit(
        pipeline,
        CommitRequest("run-1", tuple(results), str(target), {"start": None, "end": None}, False, key=KEY),
    )


def test_each_feature_is_a_row_or_quarantined_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "parcels.geojson").write_bytes(collection([f for f, _ in FEATURES]))
    (folder / "bare.geojson").write_bytes(json.dumps(feature(POLYGON, {"parcel": "P-9"})).encode())
    rows, rejects = read_all(pipeline_named("parcels"), folder)
    assert len(rows) + len(rejects) == len(FEATURES) + 1
    stored = {(Path(row["file"].decode()).name, row["feature"]) for row in rows}
    assert stored == {("bare.geojson", b"0"), ("parcels.geojson", b"0"), ("parcels.geojson", b"7")}
    wanted = [why for _, why in FEATURES if why]
    assert len(rejects) == len(wanted)
    for (path, got), expected in zip(sorted(rejects, key=lambda r: r[1]), sorted(wanted), strict=True):
        assert path.endswith("parcels.geojson") and got.startswith(expected), (got, expected)


def test_an_empty_collection_gives_no_row_and_a_malformed_one_is_quarantined_whole(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.geojson").write_bytes(collection([]))
    (folder / "odd.geojson").write_bytes(json.dumps({"type": "FeatureCollection", "features": {}}).encode())
    rows, rejects = read_all(pipeline_named("parcels"), folder)
    assert rows == [] and len(rejects) == 1
    assert rejects[0][1] == "a FeatureCollection's features must be a list, not a dict"


def tolerant(pipeline: Pipeline) -> Pipeline:
    """The pipeline with a circuit breaker that lets a mostly broken collection reach ``main``."""
    breaker = pipeline.spec.circuit_breaker.model_copy(update={"max_quarantine_rate": 1.0})
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"circuit_breaker": breaker})})


def test_a_collection_through_the_engine_counts_every_feature(tmp_path: Path) -> None:
    pipeline = tolerant(pipeline_named("parcels"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "parcels.geojson").write_bytes(collection([f for f, _ in FEATURES]))
    (folder / "empty.geojson").write_bytes(collection([]))
    record = run(pipeline, folder, tmp_path / "out")
    quarantined = [why for _, why in FEATURES if why]
    assert (record.rows_in, record.rows_stored, record.rows_quarantined) == (
        len(FEATURES),
        len(FEATURES) - len(quarantined),
        len(quarantined),
    )
    table = tables.load("parcels")
    assert table is not None
    assert sorted(table.scan().to_arrow().column("feature").to_pylist()) == [0, 7]
    reasons = [row["_reason"] for row in quarantine.records(pipeline, str(tmp_path / "out"), KEY)]
    assert len(reasons) == len(quarantined)
    assert all(any(why.startswith(q) for q in quarantined) for why in reasons), reasons
    assert engine.discover(pipeline, str(folder), str(tmp_path / "out"), False) == []  # both files read


def test_a_run_of_only_an_empty_collection_commits_so_the_file_is_marked_read(tmp_path: Path) -> None:
    pipeline = pipeline_named("parcels")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.geojson").write_bytes(collection([]))
    (shard,) = engine.discover(pipeline, str(folder), str(tmp_path / "out"), False)
    result = engine.process_shard(pipeline, shard, "run-1", str(tmp_path / "out"), KEY)
    assert result.rows_in == 0 and not sources.nothing_new([result])  # the DAG would skip the commit
    record = engine.commit(
        pipeline,
        CommitRequest(
            "run-1", (result,), str(tmp_path / "out"), {"start": None, "end": None}, False, key=KEY
        ),
    )
    assert record.rows_in == 0
    assert engine.discover(pipeline, str(folder), str(tmp_path / "out"), False) == []


def test_a_geojson_contract_must_key_by_feature(tmp_path: Path) -> None:
    from base_platform.catalog.loader import CatalogError
    from base_platform.pipelines.spec import load_pipeline

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "contracts").mkdir()
    contract = Path("config/contracts/parcels.yaml").read_text().replace("[sha256, feature]", "[sha256]")
    (tmp_path / "contracts" / "parcels.yaml").write_text(contract)
    path = tmp_path / "pipelines" / "parcels.yaml"
    path.write_text(Path("config/pipelines/parcels.yaml").read_text())
    with pytest.raises(CatalogError, match="primary_key needs feature"):
        load_pipeline(path)

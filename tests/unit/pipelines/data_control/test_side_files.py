"""Side files (thumbnails, resampled series) belong to the snapshots whose rows name them: an
expiry takes those only expired snapshots named, the orphan removal those no snapshot names once
older than its grace, and an erasure the erased rows'. Before, nothing ever deleted them."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from base_platform.files import resolve
from base_platform.pipelines.data_control import erasure, maintenance, table_actions
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, Protection, pipeline_named
from tests.unit.pipelines.test_engine import KEY, run

LATER = datetime(2027, 6, 1, tzinfo=UTC)  # past every snapshot's retention and every grace


@pytest.fixture(autouse=True)
def _root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))


def image(folder: Path, name: str, colour: tuple[int, int, int]) -> Path:
    """A small PNG of one colour: each colour a content of its own, so a thumbnail of its own."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sink = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(sink, "PNG")
    (folder / name).write_bytes(sink.getvalue())
    return folder / name


def series(folder: Path, name: str, value: int) -> Path:
    """A two-point series whose values make its content, so its resampled file, its own."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"timestamp,value\n2026-11-01T00:00:00Z,{value}\n2026-11-01T03:00:00Z,1\n")
    return folder / name


MADE = {  # pipeline: (a file of the n-th content, its side file's suffix)
    "images": (lambda folder, n: image(folder, f"i{n}.png", (n * 60, 0, 255 - n * 60)), ".webp"),
    "sensor_series": (lambda folder, n: series(folder, f"s{n}.csv", n), ".parquet"),
}


def table_root(pipeline: Pipeline) -> Path:
    """Where the table and its side files live: the spec's storage, as in production."""
    return Path(resolve(pipeline.spec.storage.uri))


def thumbnails(pipeline: Pipeline) -> set[str]:
    """The side files beside the table: thumbnails, or resampled series."""
    return {path.name for path in (table_root(pipeline) / "_media").iterdir()}


def thumbnail_of(pipeline: Pipeline, path: Path) -> str:
    import hashlib

    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}{MADE[pipeline.spec.name][1]}"


def commit(pipeline: Pipeline, folder: Path, run_key: str) -> RunRecord:
    return run(pipeline, folder, table_root(pipeline), run_key)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MADE))
def test_expiry_takes_the_side_files_only_expired_snapshots_named(name: str, tmp_path: Path) -> None:
    pipeline = pipeline_named(name)
    red, blue = MADE[name][0](tmp_path / "in1", 1), MADE[name][0](tmp_path / "in2", 2)
    first = commit(pipeline, tmp_path / "in1", "run-1")
    commit(pipeline, tmp_path / "in2", "run-2")
    assert first.snapshot_id is not None
    table_actions.rollback(name, first.snapshot_id, dry_run=False, who="ops", why="test")
    both = {thumbnail_of(pipeline, red), thumbnail_of(pipeline, blue)}
    assert thumbnails(pipeline) == both

    table = table_actions.dataset_table(name)
    swept = maintenance.remove_orphans(table, LATER, grace=timedelta(0))
    assert swept["side_files_deleted"] == 0 and thumbnails(pipeline) == both  # run-2's snapshot is kept

    report = maintenance.expire_older_than(table.refresh(), days=7, now=LATER)
    assert len(report["snapshots_expired"]) == 1
    assert thumbnails(pipeline) == {thumbnail_of(pipeline, red)}
    assert maintenance.PENDING_DELETES not in table.refresh().properties


@pytest.mark.slow
def test_a_side_file_no_commit_named_goes_after_the_grace_and_not_before(tmp_path: Path) -> None:
    pipeline = pipeline_named("images")
    red = image(tmp_path / "in1", "red.png", (255, 0, 0))
    blue = image(tmp_path / "in2", "blue.png", (0, 0, 255))
    commit(pipeline, tmp_path / "in1", "run-1")
    (shard,) = engine.discover(pipeline, str(tmp_path / "in2"), str(table_root(pipeline)), False)
    engine.process_shard(pipeline, shard, "run-2", str(table_root(pipeline)), KEY)  # never commits
    stray = table_root(pipeline) / "_media" / thumbnail_of(pipeline, blue)
    written = datetime.fromtimestamp(stray.stat().st_mtime, UTC)

    table = table_actions.dataset_table("images")
    early = maintenance.remove_orphans(table, written + maintenance.ORPHAN_GRACE / 2)
    assert early["side_files_deleted"] == 0 and stray.exists()  # it may be a run in flight
    late = maintenance.remove_orphans(table, written + maintenance.ORPHAN_GRACE + timedelta(hours=1))
    assert late["side_files_deleted"] == 1 and not stray.exists()
    assert thumbnails(pipeline) == {thumbnail_of(pipeline, red)}  # the committed one stays


@pytest.mark.slow
def test_an_erased_images_thumbnail_goes_with_it(tmp_path: Path) -> None:
    named = pipeline_named("images")
    security = named.spec.security.model_copy(
        update={"columns": {"file": Protection(classification="pii", protect="hmac")}}
    )
    pipeline = named.model_copy(update={"spec": named.spec.model_copy(update={"security": security})})
    red = image(tmp_path / "in1", "jane-roe.png", (255, 0, 0))
    blue = image(tmp_path / "in1", "someone-else.png", (0, 0, 255))
    commit(pipeline, tmp_path / "in1", "run-1")
    assert thumbnails(pipeline) == {thumbnail_of(pipeline, red), thumbnail_of(pipeline, blue)}

    report = erasure.erase(pipeline, str(red), KEY, who="dpo", request="gdpr-2027-0001")
    assert report["rows_removed"] == 1 and report["snapshots_expired"]
    assert thumbnails(pipeline) == {thumbnail_of(pipeline, blue)}

"""Which snapshot a publish run takes, and how digests travel to Postgres (the rest: integration)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from base_platform.pipelines.data_distribution import publishing
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.event_coordination.dataset_assets import triggered_snapshots
from base_platform.pipelines.spec import pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import run


@pytest.mark.slow
def test_a_run_publishes_the_asked_snapshot_else_the_newest_events_else_the_current_one(
    tmp_path: Path,
) -> None:
    pipeline = pipeline_named("transactions")
    ids = []
    for number in (1, 2, 3):
        generate(50, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        ids.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}").snapshot_id)
    table = tables.load("transactions")
    assert table is not None

    def event(name: str, snapshot_id: int | None, minute: int) -> SimpleNamespace:
        when = datetime(2026, 11, 28, 12, minute, tzinfo=UTC)
        extra = {"snapshot_id": str(snapshot_id)} if snapshot_id else {}
        return SimpleNamespace(asset=SimpleNamespace(name=name), extra=extra, timestamp=when)

    triggering = {
        "base.transactions": [event("base.transactions", ids[1], 5), event("base.transactions", ids[0], 1)],
        "base-dataset-changes": [event("base.transactions", None, 7), event("base.other", 9, 8)],
    }
    triggered = triggered_snapshots({"triggering_asset_events": triggering})
    assert triggered == {"transactions": ids[1], "other": 9}  # per dataset, the newest event's
    assert publishing.snapshot_to_publish(table, triggered["transactions"], None) == ids[1]
    assert publishing.snapshot_to_publish(table, ids[1], str(ids[0])) == ids[0]
    assert publishing.snapshot_to_publish(table, None, None) == ids[2]
    with pytest.raises(publishing.PublishError, match="no snapshot 42"):
        publishing.snapshot_to_publish(table, None, "42")


def test_digests_become_postgres_bytea_hex_nulls_and_slices_included() -> None:
    values = [bytes([n]) * 32 for n in range(5)]
    array = pa.array([values[0], None, *values[1:]], pa.binary(32)).slice(1)
    text = publishing._bytea_hex(array)
    assert text.to_pylist() == [None, *("\\x" + v.hex() for v in values[1:])]


def test_a_snapshot_asked_for_by_hand_must_be_on_main_not_held_by_the_breaker_nor_discarded(
    tmp_path: Path,
) -> None:
    from base_platform.pipelines.pipeline_management import breaker
    from tests.unit.pipelines.test_engine import generate_run

    pipeline = pipeline_named("transactions")
    generate_run(300, tmp_path / "good", 1)
    good = run(pipeline, tmp_path / "good", tmp_path / "out", "run-1")
    generate(600, "csv", 0.2, tmp_path / "bad", seed=2)
    bad = run(pipeline, tmp_path / "bad", tmp_path / "out", "run-2")  # trips the breaker
    table = tables.load("transactions")
    assert table is not None and breaker.state(table).state == "open" and bad.snapshot_id is not None
    assert publishing.snapshot_to_publish(table, None, str(good.snapshot_id)) == good.snapshot_id
    held = f"snapshot {bad.snapshot_id} is not on main \\(an audit the breaker holds"
    with pytest.raises(publishing.PublishError, match=held):
        publishing.snapshot_to_publish(table, None, str(bad.snapshot_id))
    assert publishing.snapshot_to_publish(table, None, None) == good.snapshot_id  # main's, not the audit's

    breaker.resolve_audit(table, "discard", who="ops", why="bad export from the switch")
    table = table.refresh()
    assert table.snapshot_by_id(bad.snapshot_id) is not None  # still in the table, until expiry
    with pytest.raises(publishing.PublishError, match=f"snapshot {bad.snapshot_id} is not on main \\(staged"):
        publishing.snapshot_to_publish(table, None, str(bad.snapshot_id))

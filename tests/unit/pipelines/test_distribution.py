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

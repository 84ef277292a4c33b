"""The typed records between stages: a run's record reads what tables written before it hold, and
writes it back the same; what travels through XCom survives JSON."""

from __future__ import annotations

import json

import pytest

from base_platform.pipelines.run_records import (
    CommitRequest,
    DeriveResult,
    RunRecord,
    Shard,
    ShardResult,
)

# A run's snapshot summary as engine.commit wrote it when the record was a dict (its base.* keys,
# in its order): a stream's run, with the lag and position only some runs have.
WRITTEN_BY_THE_DICT = {
    "base.dataset": "card_events",
    "base.run": "manual__2026-12-01T10_00_00_00_00",
    "base.dag-run": "pipeline_card_events/manual__2026-12-01T10:00:00+00:00",
    "base.interval": '{"end": "2026-12-01T10:00:00+00:00", "start": null}',
    "base.started-at": "2026-12-01T10:00:01.302942+00:00",
    "base.contract-version": "1.0.0",
    "base.full-refresh": "false",
    "base.rows-in": "600",
    "base.rows-stored": "597",
    "base.rows-quarantined": "3",
    "base.bytes-in": "102557",
    "base.null-counts": '{"account_id": 0, "memo": 212}',
    "base.freshness": '[{"age_hours": 3.18, "column": "event_time", "fresh": true, "in_the_future": false, '
    '"latest": "2026-12-01T06:52:59+00:00", "max_age_hours": 72.0}]',
    "base.quarantine": '["_quarantine/run-1/00000-859051009328.parquet"]',
    "base.inputs": '[{"sha256": "8590510093", "source": "redis://events {\\"after\\": null}"}]',
    "base.wall-seconds": "0.319",
    "base.processing-seconds": "0.261",
    "base.stage-seconds": '{"contracts": 0.024, "ingestion": 0.013, "storage": 0.063}',
    "base.gb-per-hour": "1.159",
    "base.lag": '{"pending": 3, "undelivered": 0}',
    "base.position": "[1764583200000, 7]",
}
# A run adopted from the format before Iceberg (legacy_import): its own order, a manifest old
# enough to lack started_at, freshness and wall_seconds, and when it was committed then.
ADOPTED = {
    "base.dataset": "transactions",
    "base.run": "run-1",
    "base.interval": '{"end": null, "start": null}',
    "base.rows-in": "400",
    "base.rows-stored": "392",
    "base.rows-quarantined": "8",
    "base.bytes-in": "67947",
    "base.null-counts": '{"memo": 145}',
    "base.quarantine": "[]",
    "base.inputs": "[]",
    "base.processing-seconds": "0.037",
    "base.stage-seconds": "{}",
    "base.gb-per-hour": "null",
    "base.dag-run": "",
    "base.contract-version": "1.0.0",
    "base.full-refresh": "false",
    "base.adopted-committed-at": "2026-10-01T10:00:00+00:00",
}


def test_a_run_record_reads_the_summary_the_dict_wrote_and_writes_it_back_the_same() -> None:
    record = RunRecord.from_properties({"added-records": "597", **WRITTEN_BY_THE_DICT})
    assert record is not None
    assert (record.run, record.rows_in, record.rows_stored, record.full_refresh) == (
        "manual__2026-12-01T10_00_00_00_00",
        600,
        597,
        False,
    )
    assert record.interval == {"start": None, "end": "2026-12-01T10:00:00+00:00"}
    assert record.freshness and record.freshness[0]["fresh"] is True
    assert (record.position, record.lag, record.lineage) == (
        [1764583200000, 7],
        {"pending": 3, "undelivered": 0},
        None,
    )
    written = record.to_properties()
    assert written == WRITTEN_BY_THE_DICT and list(written) == list(WRITTEN_BY_THE_DICT)

    adopted = RunRecord.from_properties(ADOPTED)
    assert adopted is not None
    assert (adopted.started_at, adopted.freshness, adopted.wall_seconds, adopted.gb_per_hour) == (None,) * 4
    assert adopted.to_properties() == ADOPTED  # the same keys and values (commit's order, not adoption's)

    timed = {**WRITTEN_BY_THE_DICT, "base.position": "2026-12-01T09:00:00+00:00"}  # text, not JSON
    at_a_time = RunRecord.from_properties(timed)
    assert at_a_time is not None and at_a_time.position == "2026-12-01T09:00:00+00:00"
    assert at_a_time.to_properties() == timed

    assert RunRecord.from_properties({"base.maintenance": "compaction"}) is None  # no run's snapshot


@pytest.mark.parametrize("key", [None, b"secret"])
def test_a_derive_result_and_a_commit_request_survive_json(key: bytes | None) -> None:
    made = DeriveResult(
        "/data/derived/transactions-42", {"transactions": "42"}, 292, True, "2026-12-01T10:00"
    )
    assert DeriveResult.from_json(json.loads(json.dumps(made.to_json()))) == made

    shard = Shard(0, "/data/in/a.csv", "ab" * 32, 100, kind="http", span={"after": 7})
    result = ShardResult(
        shard, 3, 2, 1, ("_staging/r/a.parquet",), (), None, {"memo": 1}, None, "2026-12-01T10:00:00+00:00",
        0.5, {"ingestion": 0.1}, position=9,
    )  # fmt: skip
    request = CommitRequest(
        "r", (result,), "/data/out", {"start": None, "end": None}, True, "2026-12-01T09:59:00+00:00",
        key, "pipeline_x/r", False, {"transactions": "42"}, {"pending": 3}, [1764583200000, 7],
    )  # fmt: skip
    data = json.loads(json.dumps(request.to_json()))
    assert "key" not in data  # a secret: never in XCom
    assert CommitRequest.from_json(data, key) == request

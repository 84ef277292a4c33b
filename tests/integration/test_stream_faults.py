"""The ``redis_stream`` source against what real producers and operators do, on a real
redis-server: JSON numbers, entries without the field, two objects in one entry, a producer's
retry, a lost consumer group, and an audit discarded by an operator. Every entry is counted,
and no event is stored twice."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import breaker, engine
from base_platform.pipelines.run_records import CommitRequest
from tests.integration.test_streams import STREAM, Redis, card_events, committed, pending, run, server
from tests.unit.pipelines.test_engine import KEY, via_xcom

pytestmark = pytest.mark.integration
__all__ = ["server"]
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg


def event(number: int, **changes: Any) -> dict[str, Any]:
    """A card event as a producer's JSON library writes it: the amount a JSON number."""
    return {
        "event_id": f"ev-{number:06d}",
        "event_type": "authorisation",
        "account_id": f"acct-{number % 7}",
        "merchant": "merchant 001",
        "amount": 12.5,
        "currency": "EUR",
        "card_email": f"holder{number}@example.com",
        "card_last4": "1234",
        "event_time": NOW,
        "reverses": None,
        **changes,
    }


def send(server: Redis, *entries: dict[str, str]) -> None:
    client = server.client()
    for fields in entries:
        client.xadd(STREAM, fields)


def as_entry(value: dict[str, Any]) -> dict[str, str]:
    return {"event": json.dumps(value)}


def quarantine_reasons(record: Any, target: Path) -> Counter[str]:
    import pyarrow.parquet as pq

    reasons: Counter[str] = Counter()
    for path in record.quarantine:
        reasons.update(pq.read_table(target / path, columns=["_reason"]).column("_reason").to_pylist())
    return reasons


def test_json_numbers_are_stored_and_every_odd_entry_is_counted_with_its_reason(
    server: Redis, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    send(server, *(as_entry(event(n)) for n in range(300)))  # 12.5, as every JSON library writes it
    send(server, *({"other": "x"} for _ in range(10)))  # no `event` field
    send(server, {"event": json.dumps(event(900)) + "\n" + json.dumps(event(901))})  # two objects
    send(server, {"event": "null"})  # a bare null: Arrow's JSON reader crashes on it
    send(server, {"event": json.dumps(event(902, amount={"value": 1}))})
    record = run(card_events(), target, "run-1")
    assert record is not None
    assert record.rows_in == 313 and record.rows_stored == 300 and record.rows_quarantined == 13
    assert quarantine_reasons(record, target) == {
        "no field 'event' in the entry": 10,
        "more than one JSON value": 1,
        "not a JSON object but null": 1,
        "amount: an object where one value is expected": 1,
    }
    assert sorted(committed()) == [f"ev-{n:06d}" for n in range(300)]
    assert pending(server) == 0


def test_a_producer_retry_is_stored_once_and_counted_as_a_repeated_key(server: Redis, tmp_path: Path) -> None:
    target = tmp_path / "out"
    send(server, *(as_entry(event(n)) for n in range(50)))
    assert run(card_events(), target, "run-1") is not None
    send(server, *(as_entry(event(n)) for n in range(40, 100)))  # 40-49 sent again: a retry
    second = run(card_events(), target, "run-2")
    assert second is not None and (second.rows_stored, second.rows_quarantined) == (50, 10)
    assert quarantine_reasons(second, target) == {"event_id: repeated key (already in the table)": 10}
    assert sorted(committed()) == [f"ev-{n:06d}" for n in range(100)]


def test_a_lost_consumer_group_stores_nothing_twice(server: Redis, tmp_path: Path) -> None:
    target = tmp_path / "out"
    send(server, *(as_entry(event(n)) for n in range(100)))
    assert run(card_events(), target, "run-1") is not None
    server.client().xgroup_destroy(STREAM, "base")  # or a failover that did not carry it
    send(server, *(as_entry(event(n)) for n in range(100, 200)))
    second = run(card_events(), target, "run-2")
    assert second is not None and second.rows_in == 100 and second.rows_stored == 100
    server.client().xgroup_destroy(STREAM, "base")
    server.client().xgroup_create(STREAM, "base", id="0")  # made again by someone else, at the start
    send(server, *(as_entry(event(n)) for n in range(200, 210)))
    third = run(card_events(), target, "run-3")
    assert third is not None and third.rows_in == 10 and third.rows_quarantined == 0  # set past, not re-read
    ids = committed()
    assert len(ids) == len(set(ids)) == 210


def test_a_discarded_audit_releases_its_entries_and_the_stream_goes_on(server: Redis, tmp_path: Path) -> None:
    """A batch the breaker stops (over 20% quarantined), discarded by an operator: the next run
    reads only what came after it, and nothing stays pending."""
    pipeline, target = card_events(), tmp_path / "out"
    send(server, *(as_entry(event(n, amount="n/a")) for n in range(100)))
    shards = engine.discover(pipeline, "", str(target), False)
    results = [engine.process_shard(pipeline, shard, "run-1", str(target), KEY) for shard in shards]
    request = CommitRequest("run-1", tuple(via_xcom(results)), str(target), {}, key=KEY, publish=True)
    assert not engine.commit(pipeline, request).published  # the breaker opened
    table = tables.load("card_events")
    assert table is not None
    from base_platform.pipelines.pipeline_management.breaker_dag import release_stream

    audited = breaker.audit_position(table)
    breaker.resolve_audit(table, "discard", "operator", "a producer bug, fixed")
    assert release_stream(pipeline, "discard", audited, "a producer bug") is None
    assert pending(server) == 0 and server.client().xlen(f"{STREAM}:dead-letter") == 100
    send(server, *(as_entry(event(n)) for n in range(100, 130)))
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == 30 and record.published
    assert pending(server) == 0
    assert sorted(committed()) == [f"ev-{n:06d}" for n in range(100, 130)]


def test_a_discard_without_an_audit_moves_the_pending_entries_to_the_dead_letter_stream(
    server: Redis, tmp_path: Path
) -> None:
    """Runs that failed after reading (no audit to discard): the operator's discard releases what
    they left pending, kept in ``card_events:dead-letter``, and the stream goes on after it."""
    from base_platform.pipelines.pipeline_management.breaker_dag import release_stream

    pipeline, target = card_events(), tmp_path / "out"
    send(server, *(as_entry(event(n)) for n in range(100)))
    assert run(pipeline, target, "run-1") is not None
    send(server, *(as_entry(event(n)) for n in range(100, 150)))
    for shard in engine.discover(pipeline, "", str(target), False):
        engine.process_shard(pipeline, shard, "run-2", str(target), KEY)  # then the run died, again
    assert pending(server) == 50
    table = tables.load("card_events")
    assert table is not None
    breaker.trip(table, "3 runs in a row failed", "run-2", None)
    audited = breaker.audit_position(table)  # as pipeline_control's resolve task does it
    breaker.resolve_audit(table, "discard", "operator", "a poison batch")
    breaker.move_past(table.refresh(), release_stream(pipeline, "discard", audited, "a poison batch"))
    assert pending(server) == 0 and server.client().xlen(f"{STREAM}:dead-letter") == 50
    send(server, *(as_entry(event(n)) for n in range(150, 170)))
    record = run(pipeline, target, "run-3")
    assert record is not None and record.rows_in == 20
    server.client().xgroup_destroy(STREAM, "base")  # and a lost group does not bring them back either
    assert run(pipeline, target, "run-4") is None


def test_committed_entries_older_than_the_retention_are_trimmed_and_no_other(
    server: Redis, tmp_path: Path
) -> None:
    pipeline, target = card_events(), tmp_path / "out"
    source = pipeline.spec.source.model_copy(update={"retention_hours": 0})
    pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"source": source})})
    send(server, *(as_entry(event(n)) for n in range(3000)))
    assert run(pipeline, target, "run-1") is not None  # acked, then trimmed
    send(server, *(as_entry(event(n)) for n in range(3000, 3010)))
    assert server.client().xlen(STREAM) < 3000  # whole nodes of committed entries gone
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == 10  # the uncommitted ones stayed

"""Stream operators on real parts: card events through Redis into ``card_events``, then ``route``,
``join`` and ``window`` pipelines that read only what each commit appended."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_streaming import stream_transforms
from base_platform.pipelines.pipeline_management import derived, engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import pipeline_named
from benchmarks.datagen import MERCHANT_CATEGORIES
from benchmarks.streamgen import MERCHANTS, merchant_name, write_merchants
from tests.integration.test_streams import STREAM, Redis, card_events, events, server
from tests.integration.test_streams import run as stream_run
from tests.unit.pipelines.test_engine import KEY, via_xcom

pytestmark = pytest.mark.integration
__all__ = ["server"]  # the Redis of the stream tests
KNOWN = MERCHANTS - 10  # the reference lacks the last ten merchants


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg


def operator_run(name: str, tmp_path: Path, run_key: str) -> RunRecord | None:
    """A run of a derived pipeline as its DAG makes it: derive, discover, shards, commit (audited)."""
    pipeline = pipeline_named(name)
    made = derived.derive(pipeline, str(tmp_path / name / "derived"), {})
    if made.folder is None:
        return None
    target = str(tmp_path / name / "out")
    shards = engine.discover(pipeline, made.folder, target, False)
    results = [engine.process_shard(pipeline, shard, run_key, target, KEY) for shard in shards]
    return engine.commit(
        pipeline,
        CommitRequest(
            run_key,
            tuple(via_xcom(results)),
            target,
            {},
            made.replace,
            key=KEY,
            lineage=made.lineage,
            position=made.position,
        ),
    )


def reference(tmp_path: Path) -> None:
    """The merchants reference, committed from a CSV drop, without the last ten merchants."""
    incoming = tmp_path / "merchants" / "in"
    write_merchants(incoming / "merchants.csv", KNOWN)
    merchants, target = pipeline_named("merchants"), str(tmp_path / "merchants" / "out")
    shards = engine.discover(merchants, str(incoming), target, False)
    results = [engine.process_shard(merchants, shard, "m-1", target, KEY) for shard in shards]
    stored = engine.commit(merchants, CommitRequest("m-1", tuple(results), target, {}, key=KEY)).rows_stored
    assert stored == KNOWN + len(MERCHANT_CATEGORIES)  # and the generated transactions' merchants


def rows(name: str, *columns: str) -> list[dict[str, Any]]:
    table = tables.load(name)
    assert table is not None
    found: list[dict[str, Any]] = table.scan(selected_fields=columns).to_arrow().to_pylist()
    return found


def test_route_and_join_append_only_what_each_commit_added_and_quarantine_the_unmatched(
    server: Redis, tmp_path: Path
) -> None:
    reference(tmp_path)
    stream = card_events(max_events=100_000)
    produced = events(server, 6_000)
    assert stream_run(stream, tmp_path / "events", "run-1") is not None
    first = operator_run("card_authorisations", tmp_path, "a-1")
    reversals = operator_run("card_reversals", tmp_path, "r-1")
    assert first is not None and reversals is not None
    assert first.lineage and first.lineage["card_events"] and first.lineage["merchants"]  # as of the batch
    everything = rows("card_events", "event_id", "event_type", "merchant")
    unknown = [
        e for e in everything if e["event_type"] == "authorisation" and e["merchant"] >= merchant_name(KNOWN)
    ]
    assert first.rows_in + reversals.rows_in == produced.events  # every event routed once
    assert first.rows_quarantined == len(unknown) > 0  # no category for an unknown merchant
    authorised = rows("card_authorisations", "event_id", "merchant", "category")
    assert all(row["category"] for row in authorised)
    assert operator_run("card_authorisations", tmp_path, "a-2") is None  # nothing appended since

    more = events(server, 3_000, first=produced.events)
    assert stream_run(stream, tmp_path / "events", "run-2") is not None
    second = operator_run("card_authorisations", tmp_path, "a-3")
    again = operator_run("card_reversals", tmp_path, "r-2")
    assert second is not None and again is not None
    assert second.rows_in + again.rows_in == more.events  # only the appended events
    ids = [row["event_id"] for row in rows("card_authorisations", "event_id")]
    reversed_ids = [row["event_id"] for row in rows("card_reversals", "event_id")]
    assert len(ids) == len(set(ids)) and not set(ids) & set(reversed_ids)
    everything = rows("card_events", "event_id", "event_type", "merchant")
    assert sorted(ids) == sorted(
        e["event_id"]
        for e in everything
        if e["event_type"] == "authorisation" and e["merchant"] < merchant_name(KNOWN)
    )


T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def event(number: int, account: str, at: datetime, amount: str, kind: str = "authorisation") -> bytes:
    return json.dumps(
        {
            "event_id": f"ev-w{number:06d}",
            "event_type": kind,
            "account_id": account,
            "merchant": merchant_name(number % 5),
            "amount": amount,
            "currency": "EUR",
            "card_email": f"{account}@example.com",
            "card_last4": "1234",
            "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reverses": None,
        }
    ).encode()


Events = list[tuple[str, datetime, str, str]]  # account, event time, amount, event type


def send(server: Redis, batch: Events, first: int) -> None:
    client = server.client()
    for offset, (account, at, amount, kind) in enumerate(batch):
        client.xadd(STREAM, {"event": event(first + offset, account, at, amount, kind)})


def expected(batch: Events, upto: datetime) -> dict[tuple[str, datetime], Decimal]:
    """Spend per (account, window start) of the authorisations in windows ending by ``upto``."""
    spend: dict[tuple[str, datetime], Decimal] = defaultdict(Decimal)
    for account, at, amount, kind in batch:
        start = at - timedelta(minutes=at.minute % 5, seconds=at.second)
        if kind == "authorisation" and start + timedelta(minutes=5) <= upto:
            spend[account, start] += Decimal(amount)
    return dict(spend)


def test_windows_are_written_once_the_watermark_passes_and_late_events_are_quarantined(
    server: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = card_events(max_events=100_000)
    early = [
        (account, T0 + timedelta(seconds=10 * n), f"{n % 7 + 1}.25", kind(n))
        for n in range(181)  # 08:00:00 to 08:30:00, for two accounts
        for account in ("acct-a", "acct-b")
    ]
    send(server, early, 0)
    assert stream_run(stream, tmp_path / "events", "run-1") is not None
    first = operator_run("account_spend_5m", tmp_path, "w-1")
    assert first is not None and first.position == (T0 + timedelta(minutes=20)).isoformat()  # 30 - 10
    assert spend() == expected(early, T0 + timedelta(minutes=20)) and len(spend()) == 8  # 4 per account

    late = [("acct-a", T0 + timedelta(minutes=2), "100.00", kind(0))] * 3  # its window was written
    in_time = [("acct-b", T0 + timedelta(minutes=22), "50.00", kind(0))] * 2  # [20, 25) was not yet
    later = [("acct-a", T0 + timedelta(minutes=30, seconds=10 * n), "1.00", kind(0)) for n in range(1, 61)]
    bad_clock = [("acct-b", datetime(2099, 1, 1, tzinfo=UTC), "9.99", kind(0))]  # must not move the watermark
    send(server, late + in_time + later + bad_clock, 1_000)
    assert stream_run(stream, tmp_path / "events", "run-2") is not None
    second = operator_run("account_spend_5m", tmp_path, "w-2")
    assert second is not None and second.position == (T0 + timedelta(minutes=30)).isoformat()  # 40 - 10
    assert second.rows_quarantined == 4  # the late ones and the one from 2099, not dropped
    assert len([r for r in rows_of_quarantine(tmp_path) if r.startswith("late")]) == 3
    assert len([r for r in rows_of_quarantine(tmp_path) if r.startswith("in the future")]) == 1
    assert spend() == expected(early + in_time + later, T0 + timedelta(minutes=30))  # each once, no late

    class Later(datetime):  # 2099 has come: the refused event's window closes now
        @classmethod
        def now(cls, tz: Any = None) -> Later:
            return cls(2099, 1, 1, 1, 0, tzinfo=UTC)

    monkeypatch.setattr(stream_transforms, "datetime", Later)
    send(server, [("acct-b", datetime(2099, 1, 1, 0, 30, tzinfo=UTC), "1.00", kind(0))], 2_000)
    assert stream_run(stream, tmp_path / "events", "run-3") is not None
    assert operator_run("account_spend_5m", tmp_path, "w-3") is not None
    refused_window = ("acct-b", datetime(2099, 1, 1, 0, 0, tzinfo=UTC))
    assert refused_window not in spend()  # quarantined once, never counted in a window as well


def kind(number: int) -> str:
    return "reversal" if number % 10 == 9 else "authorisation"


def spend() -> dict[tuple[str, datetime], Decimal]:
    """The window dataset as (account, window start) -> spend."""
    found = rows("account_spend_5m", "account_id", "window_start", "spend")
    return {(row["account_id"], row["window_start"]): row["spend"] for row in found}


def rows_of_quarantine(tmp_path: Path) -> list[str]:
    import pyarrow.dataset as ds

    quarantine = ds.dataset(tmp_path / "account_spend_5m" / "out" / "_quarantine", format="parquet")
    reasons: list[str] = quarantine.to_table().column("_reason").to_pylist()
    return reasons

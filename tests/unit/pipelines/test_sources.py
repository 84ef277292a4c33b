"""The source interface's own rules: positions order by value, spans resume, and waits obey
``Retry-After``. The sources themselves run against real Postgres and HTTP in
tests/integration/test_sources.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import tenacity

from base_platform.pipelines.data_ingestion import decoding, sources
from base_platform.pipelines.data_ingestion.sources import http
from base_platform.pipelines.run_records import Shard, ShardResult, highest
from base_platform.pipelines.spec import FileSource, pipeline_named


def test_positions_order_by_time_not_by_text() -> None:
    later_in_text = "2026-01-01T10:00:00+01:00"  # 09:00 UTC
    assert highest([later_in_text, "2026-01-01T09:30:00+00:00", None]) == "2026-01-01T09:30:00+00:00"
    assert highest(["2026-01-01T09:30:00+00:00", "2026-01-01T09:30:00.5+00:00"]).endswith(".5+00:00")
    assert highest([9, 10, None]) == 10 and highest([None]) is None


def result(shard: Shard, rows: int, position: Any) -> ShardResult:
    return ShardResult(
        shard, rows, rows, 0, (), (), None, {}, None, "2026-01-01T00:00:00+00:00", 0.0, {}, position=position
    )


def test_a_run_stands_where_its_shards_planned_to_reach_even_if_they_read_nothing() -> None:
    empty = sources.span_shard(0, "postgres", "postgres://db/s.t", {"after": 5, "upto": 9})
    assert sources.run_position([result(empty, 0, None)]) == 9
    api = sources.span_shard(0, "http", "http://api/v1", {"after": 5})
    assert (
        sources.run_position([result(api, 3, 8)]) == 8 and sources.run_position([result(api, 0, None)]) == 5
    )
    assert sources.nothing_new([result(api, 0, None)]) and not sources.nothing_new([result(api, 3, 8)])
    file = Shard(0, "in/a.csv", "0" * 64, 0)
    assert sources.run_position([result(file, 0, None)]) is None and not sources.nothing_new(
        [result(file, 0, None)]
    )


def test_a_span_shard_keeps_its_id_and_label_through_xcom() -> None:
    shard = sources.span_shard(3, "http", "http://api/v1", {"after": "2026-01-01T00:00:00+00:00"})
    again = Shard.from_json(shard.to_json())
    assert again == shard and again.id == shard.id and again.id.startswith("00003-")
    assert shard.label == 'http://api/v1 {"after": "2026-01-01T00:00:00+00:00"}'


def waited(exc: BaseException, attempt: int = 1) -> float:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return http._wait(state)


def test_a_wait_obeys_retry_after_in_seconds_or_as_a_date_and_backs_off_without_it() -> None:
    assert waited(http.RetryableStatus("429", http._retry_after("7"))) == 7
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < waited(http.RetryableStatus("503", http._retry_after(soon))) <= 30
    assert waited(http.RetryableStatus("429", http._retry_after("86400"))) == http.MAX_WAIT_SECONDS
    assert (
        http.BACKOFF_SECONDS
        <= waited(http.RetryableStatus("503", None), attempt=1)
        < 4 * http.BACKOFF_SECONDS
    )
    assert waited(http.RetryableStatus("503", None), attempt=4) >= 8 * http.BACKOFF_SECONDS


def test_a_source_without_kind_is_files() -> None:
    assert isinstance(pipeline_named("transactions").spec.source, FileSource)


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (None, None),
        ("a", b"a"),
        (True, b"true"),
        ("12.5", b"12.5"),  # a number as exact_json reads it
        ({"a": 1}, "x: an object where one value is expected"),
    ],
)
def test_a_json_value_becomes_the_text_a_file_would_hold(value: Any, raw: bytes | str | None) -> None:
    found = decoding.record_values({"x": value}, ["x"])
    assert found == raw if isinstance(raw, str) else found == [raw]

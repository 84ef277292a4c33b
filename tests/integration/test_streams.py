"""The ``redis_stream`` source and its trigger on a real redis-server: every event committed
exactly once through kills, a commit not yet acked, and a Redis restart (AOF on)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, cast

import pytest

from base_platform.pipelines.data_ingestion import sources
from base_platform.pipelines.data_ingestion.redis_streams import parse_id
from base_platform.pipelines.data_ingestion.sources import redis_stream
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_streaming.backlog_trigger import StreamBacklogTrigger
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import Pipeline, StreamBatch, pipeline_named
from benchmarks.streamgen import Produced, produce
from tests.conftest import ROOT, free_port
from tests.e2e.services import redis
from tests.unit.pipelines.test_engine import KEY, via_xcom

pytestmark = pytest.mark.integration
STREAM = "card_events"


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg


class Redis:
    """A redis-server with AOF on a fixed port, which a test may restart; ``redis_default`` is it."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.base, self.port, self.stack = base, free_port(), ExitStack()
        connection = {"conn_type": "redis", "host": "127.0.0.1", "port": self.port}
        monkeypatch.setenv("AIRFLOW_CONN_REDIS_DEFAULT", json.dumps(connection))

    def start(self) -> None:
        options = ("--appendonly", "yes", "--appendfsync", "always")
        self.stack.enter_context(redis(self.base, *options, port=self.port))

    def restart(self) -> None:
        self.client().shutdown()  # with AOF on, written to disk first
        self.stack.close()
        self.stack = ExitStack()
        self.start()

    def client(self) -> Any:
        import redis as client

        return client.Redis(port=self.port)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Redis]:
    found = Redis(tmp_path / "redis", monkeypatch)
    found.start()
    yield found
    found.stack.close()


def card_events(max_events: int = 20_000) -> Pipeline:
    pipeline = pipeline_named("card_events")
    source = pipeline.spec.source.model_copy(update={"batch": StreamBatch(max_events=max_events)})
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"source": source})})


def events(server: Redis, count: int, bad: float = 0.0, first: int = 0) -> Produced:
    produced = produce(server.client(), STREAM, count * 20, 0.05 - 1e-9, bad=bad, first=first)
    assert produced.events >= count // 2, produced
    return produced


def run(pipeline: Pipeline, target: Path, run_key: str, ack: bool = True) -> RunRecord | None:
    """A batch as ``pipeline_card_events`` runs it: discover, shards, commit and audit, ack."""
    shards = engine.discover(pipeline, "", str(target), False)
    results = [engine.process_shard(pipeline, shard, run_key, str(target), KEY) for shard in shards]
    if sources.nothing_new(results):
        return None
    record = engine.commit(
        pipeline, CommitRequest(run_key, tuple(via_xcom(results)), str(target), {}, key=KEY)
    )
    assert record.published, record
    if ack:
        redis_stream.acknowledge(pipeline, record.position)
    return record


def committed() -> list[str]:
    table = tables.load("card_events")
    assert table is not None
    ids: list[str] = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    return ids


def pending(server: Redis) -> int:
    return int(server.client().xpending(STREAM, "base")["pending"])


def exactly_once(ids: list[str], produced: int, bad: int) -> None:
    assert len(ids) == len(set(ids)) == produced - bad


def test_a_stream_is_committed_in_batches_exactly_once_and_acked_after_each_commit(
    server: Redis, tmp_path: Path
) -> None:
    pipeline, target = card_events(), tmp_path / "out"
    produced = events(server, 30_000, bad=0.01)
    first = run(pipeline, target, "run-1")
    assert first is not None and first.rows_in == 20_000  # backpressure: max_events
    twenty_thousandth = server.client().xrange(STREAM, count=20_000)[-1][0]
    assert first.position == list(parse_id(twenty_thousandth))  # the last entry id, in the snapshot
    assert pending(server) == 0
    second = run(pipeline, target, "run-2")
    assert second is not None and second.rows_in == produced.events - 20_000
    assert run(pipeline, target, "run-3") is None  # drained
    quarantined = first.rows_quarantined + second.rows_quarantined
    assert quarantined == produced.bad
    exactly_once(committed(), produced.events, produced.bad)


def test_a_run_killed_mid_batch_is_claimed_by_the_next_and_committed_once(
    server: Redis, tmp_path: Path
) -> None:
    pipeline, target = card_events(), tmp_path / "out"
    produced = events(server, 12_000)
    code = (
        "import os, signal, sys; sys.path[:0] = ['plugins', '.']\n"
        "from tests.integration.test_streams import card_events\n"
        "from base_platform.pipelines.pipeline_management import engine\n"
        f"shards = engine.discover(card_events(), '', {str(target)!r}, False)\n"
        f"engine.process_shard(card_events(), shards[0], 'run-killed', {str(target)!r}, b'k')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(), check=False)
    assert child.returncode == -signal.SIGKILL
    assert pending(server) == produced.events  # delivered to the dead consumer, never committed
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == produced.events  # claimed, then read
    assert pending(server) == 0 and run(pipeline, target, "run-3") is None
    exactly_once(committed(), produced.events, 0)


def test_a_commit_not_yet_acked_is_acked_by_the_next_run_not_written_twice(
    server: Redis, tmp_path: Path
) -> None:
    pipeline, target = card_events(), tmp_path / "out"
    produced = events(server, 5_000)
    assert run(pipeline, target, "run-1", ack=False) is not None  # died before its ack
    assert pending(server) == produced.events
    more = events(server, 3_000, first=produced.events)
    record = run(pipeline, target, "run-2")
    assert record is not None and record.rows_in == more.events  # the committed ones not again
    assert pending(server) == 0
    exactly_once(committed(), produced.events + more.events, 0)


def test_a_redis_restart_with_aof_loses_and_doubles_nothing(server: Redis, tmp_path: Path) -> None:
    pipeline, target = card_events(), tmp_path / "out"
    produced = events(server, 10_000)
    assert run(pipeline, target, "run-1") is not None
    more = events(server, 5_000, first=produced.events)
    shards = engine.discover(pipeline, "", str(target), False)
    staged = [engine.process_shard(pipeline, shard, "run-2", str(target), KEY) for shard in shards]
    server.restart()  # between the read (the entries are pending) and the commit
    assert pending(server) == more.events  # the group and its pending entries came back
    retried = [engine.process_shard(pipeline, shard, "run-2", str(target), KEY) for shard in shards]
    assert [r.rows_in for r in retried] == [r.rows_in for r in staged]  # claimed back, the same
    record = engine.commit(
        pipeline, CommitRequest("run-2", tuple(via_xcom(retried)), str(target), {}, key=KEY)
    )
    redis_stream.acknowledge(pipeline, record.position)
    last = events(server, 3_000, first=produced.events + more.events)
    assert (third := run(pipeline, target, "run-3")) is not None and third.rows_in == last.events
    exactly_once(committed(), produced.events + more.events + last.events, 0)


def first_event(trigger: StreamBacklogTrigger, seconds: float) -> Any:
    async def wait() -> Any:
        runner = cast(AsyncGenerator[Any, None], trigger.run())
        try:
            return await asyncio.wait_for(runner.__anext__(), seconds)
        except TimeoutError:
            return None
        finally:
            await runner.aclose()

    return asyncio.run(wait())


def test_the_trigger_fires_on_enough_events_or_an_old_one_and_once_per_read(server: Redis) -> None:
    trigger = StreamBacklogTrigger(
        conn_id="redis_default",
        stream=STREAM,
        group="base",
        min_events=100,
        max_wait_seconds=1.0,
        poll_seconds=0.1,
    )
    client = server.client()
    client.xgroup_create(STREAM, "base", id="0", mkstream=True)
    assert first_event(trigger, 0.5) is None  # nothing waits
    client.xadd(STREAM, {"event": "{}"})
    fired = first_event(trigger, 5)
    assert fired is not None and "s old" in fired.payload["reason"]  # one event, waited 1 s
    for _ in range(150):
        client.xadd(STREAM, {"event": "{}"})
    fired = first_event(trigger, 5)  # a new trigger, as after a triggerer restart: Redis kept it all
    assert fired is not None and fired.payload["reason"] == "151 events wait"
    assert fired.payload["backlog"]["undelivered"] == 151

    async def twice() -> list[Any]:
        runner, seen = cast(AsyncGenerator[Any, None], trigger.run()), []
        try:
            seen.append(await asyncio.wait_for(runner.__anext__(), 5))
            with pytest.raises(TimeoutError):  # nobody read: it does not fire again
                await asyncio.wait_for(runner.__anext__(), 1)
        finally:
            await runner.aclose()
        return seen

    assert len(asyncio.run(twice())) == 1


def test_batches_of_any_size_are_published_a_stream_has_no_row_band(server: Redis, tmp_path: Path) -> None:
    """A stream's batch is what arrived since the last: the breaker's row band (robust z against
    five earlier runs) opened on the benchmark's sixth batch before it skipped incremental runs."""
    pipeline, target, first = card_events(), tmp_path / "out", 0
    for size in (200, 220, 210, 190, 205, 4_000, 60):
        produced = events(server, size, first=first)
        first += produced.events
        record = run(pipeline, target, f"run-{first}")  # asserts it was published
        assert record is not None and record.rows_in == produced.events
    exactly_once(committed(), first, 0)

"""The card stream under load: ``python benchmarks/stream_throughput.py``.

``make run``'s stack (LocalExecutor, 2 slots) consumes ``card_events`` while the generator
(``benchmarks.streamgen``, its own process) produces ``BENCH_RATE`` events a second (default
50,000) for ``BENCH_SECONDS`` (default 60) into the stack's Redis. Then the baseline does the
same work on the same machine without Airflow: the engine's own calls in one loop (plan, shards,
commit and audit, ack), as fast as it can, on a stream of its own at the same rate.

For each it prints the sustained rate (events over the time from the first produced to the last
committed), the latency from produce to committed (p50, p95: an entry id is Redis's clock at the
XADD; the commit is seen on ``main`` by polling the table every 0.5 s, on Redis's clock too), the
peak lag, and checks the result: stored + quarantined = produced, and no event twice.
Targets on 2 cores: at least 50,000 events/s sustained through Airflow, p95 below 30 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

if TYPE_CHECKING:
    from base_platform.pipelines.run_records import RunRecord

RATE = int(os.environ.get("BENCH_RATE", "50000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "60"))
DRAIN_SECONDS = 240  # how long after the producer stops the consumer may take to catch up
TARGET_RATE, TARGET_P95 = 50_000, 30.0


@dataclass
class Observed:
    """Commits seen on ``main``: (Redis time in ms, last entry id), and the lag's peaks."""

    commits: list[tuple[int, tuple[int, int]]] = field(default_factory=list)
    peak_events: int = 0
    peak_age: float = 0.0
    records: list[RunRecord] = field(default_factory=list)


def produce(url: str, stream: str, ticks: Path) -> subprocess.Popen[str]:
    """The generator in its own process; the URL (it holds the password) goes by the environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.streamgen", "--rate", str(RATE), "--seconds", str(SECONDS),
         "--stream", stream, "--ticks", str(ticks), "--bad-fraction", "0.001"],
        cwd=ROOT, env=os.environ | {"BASE_STREAMS_REDIS_URL": url}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def observe(dataset: str, url: str, stream: str, done: Callable[[], bool], seen: Observed) -> None:
    """Poll the table's ``main`` and the group's backlog until ``done``."""
    import redis
    import redis.asyncio

    from base_platform.pipelines.data_ingestion import redis_streams
    from base_platform.pipelines.data_storage import tables

    client = redis.Redis.from_url(url)
    table = tables.load(dataset)
    known = {s.snapshot_id for s in table.snapshots()} if table is not None else set()  # the warm-up's
    last_backlog = 0.0
    while not done():
        table = tables.load(dataset)
        if table is not None:
            now: Any = client.time()
            now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
            for snapshot in tables.lineage(table):
                if snapshot.snapshot_id in known:
                    break
                known.add(snapshot.snapshot_id)
                record = tables.run_record(snapshot)
                if record is not None and record.position:
                    seen.commits.append((now_ms, (record.position[0], record.position[1])))
                    seen.records.append(record)
        if time.monotonic() - last_backlog >= 1:
            last_backlog = time.monotonic()

            async def measure() -> redis_streams.Backlog:
                async with redis.asyncio.Redis.from_url(url) as aclient:
                    return await redis_streams.group_backlog(aclient, stream, "base")

            backlog = asyncio.run(measure())
            seen.peak_events = max(seen.peak_events, backlog.undelivered + backlog.pending)
            seen.peak_age = max(seen.peak_age, backlog.undelivered_age_seconds, backlog.pending_age_seconds)
        time.sleep(0.5)


def summary(
    name: str, ticks: list[tuple[str, int]], seen: Observed, produced: dict[str, Any]
) -> dict[str, Any]:
    """Latency per event (by its send), the sustained rate, and the result's check."""
    from base_platform.pipelines.data_ingestion.redis_streams import parse_id

    commits = sorted(seen.commits, key=lambda c: c[1])
    latencies: list[tuple[float, int]] = []
    for last_id, count in ticks:
        entry = parse_id(last_id)
        found = next((at for at, position in commits if position >= entry), None)
        if found is None:
            latencies.append((float("inf"), count))
        else:
            latencies.append(((found - entry[0]) / 1000, count))
    latencies.sort()
    total = sum(count for _, count in latencies)

    def quantile(q: float) -> float:
        reached = 0
        for value, count in latencies:
            reached += count
            if reached >= q * total:
                return value
        return float("inf")

    first_ms = parse_id(ticks[0][0])[0] if ticks else 0
    last_commit = max((at for at, _ in commits), default=first_ms)
    rows_in = sum(r.rows_in for r in seen.records)
    return {
        "name": name,
        "produced": produced["events"],
        "bad": produced["bad"],
        "rows_in": rows_in,
        "stored": sum(r.rows_stored for r in seen.records),
        "quarantined": sum(r.rows_quarantined for r in seen.records),
        "batches": len(seen.records),
        "events_per_second": produced["events"] / max((last_commit - first_ms) / 1000, 1e-3),
        "p50": quantile(0.5),
        "p95": quantile(0.95),
        "peak_lag_events": seen.peak_events,
        "peak_lag_seconds": seen.peak_age,
    }


Consumer = Callable[[Callable[[], bool]], None]  # consumes until told it is done


def run_load(
    name: str,
    dataset: str,
    url: str,
    stream: str,
    tmp: Path,
    consume: Consumer | None,
) -> dict[str, Any]:
    """Produce for SECONDS while something consumes, then wait until it has caught up."""
    ticks_file = tmp / f"ticks-{name}.json"
    producer = produce(url, stream, ticks_file)
    seen = Observed()
    stop = threading.Event()
    produced: dict[str, Any] = {}

    def caught_up() -> bool:
        if stop.is_set():
            return True
        if producer.poll() is None or not produced:
            return False
        return bool(sum(r.rows_in for r in seen.records) >= produced["events"])

    threads = [threading.Thread(target=observe, args=(dataset, url, stream, caught_up, seen))]
    if consume is not None:
        threads.append(threading.Thread(target=consume, args=(caught_up,)))
    for thread in threads:
        thread.start()
    output, _ = producer.communicate()
    produced.update(json.loads(output.strip().splitlines()[-1]))
    deadline = time.monotonic() + DRAIN_SECONDS
    while not caught_up() and time.monotonic() < deadline:
        time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    ticks = [(str(i), int(c)) for i, c in json.loads(ticks_file.read_text())]
    return summary(name, ticks, seen, produced)


def engine_loop(pipeline: Any, target: str) -> Consumer:
    """The baseline's consumer: the engine's calls in one loop, no Airflow."""
    from base_platform.pipelines.data_ingestion import sources
    from base_platform.pipelines.data_ingestion.sources import redis_stream
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import CommitRequest

    def consume(done: Callable[[], bool]) -> None:
        number = 0
        while not done():
            number += 1
            key = f"baseline-{number}"
            shards = engine.discover(pipeline, "", target, False)
            results = [engine.process_shard(pipeline, shard, key, target, b"bench-key") for shard in shards]
            if sources.nothing_new(results):
                time.sleep(0.2)
                continue
            record = engine.commit(pipeline, CommitRequest(key, tuple(results), target, {}, key=b"bench-key"))
            redis_stream.acknowledge(pipeline, record.position)

    return consume


def warm_up(url: str, stream: str) -> int:
    """One event, until it is committed: the watcher's trigger is running (the triggerer takes it
    up some seconds after the DAG is unpaused; measured, 37 s under load) and the table exists,
    so the load measures the steady state, as a stream that runs all day has it."""
    import redis

    from base_platform.pipelines.data_storage import tables
    from benchmarks.streamgen import produce

    events = produce(redis.Redis.from_url(url), stream, 100, 0.1, first=10**11).events
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        table = tables.load("card_events")
        if table is not None and table.current_snapshot() is not None:
            return events
        time.sleep(1)
    raise SystemExit("the warm-up event was not committed within 180 s")


def distinct(dataset: str) -> tuple[int, int]:
    from base_platform.pipelines.data_storage import tables

    table = tables.load(dataset)
    assert table is not None
    ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id")
    return len(ids), len(set(ids.to_pylist()))


def main() -> int:
    import httpx

    from base_platform.pipelines.spec import pipeline_named
    from scripts.dev_stack import launch, sqlite_iceberg_connection, wait_ready
    from tests.conftest import free_port

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {RATE} events/s for {SECONDS:.0f} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="base-stream-bench-"))
    home = tmp / "home"
    stack = wait_ready(
        launch(home, free_port(), free_port(), free_port(), {"AIRFLOW__CORE__PARALLELISM": "2"})
    )
    results = []
    try:
        secrets = json.loads((home / "local-secrets.json").read_text())
        url = f"redis://:{secrets['streams_redis_password']}@127.0.0.1:{stack.streams_port}/0"
        os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"] = json.dumps(
            sqlite_iceberg_connection(home / "iceberg.db", home / "warehouse")
        )
        os.environ["AIRFLOW_CONN_REDIS_DEFAULT"] = json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": stack.streams_port,
             "password": secrets["streams_redis_password"]}
        )  # fmt: skip
        os.environ["BASE_PIPELINES_ROOT"] = str(home)
        token = httpx.post(
            f"{stack.api}/auth/token", json={"username": "admin", "password": stack.password}
        ).json()["access_token"]
        httpx.patch(
            f"{stack.api}/api/v2/dags/pipeline_card_events",
            json={"is_paused": False},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        before = warm_up(url, "card_events")
        results.append(run_load("through Airflow", "card_events", url, "card_events", tmp, None))
        stored = distinct("card_events")
        results[-1]["before"] = before  # the warm-up's events

        base = pipeline_named("card_events")
        source = base.spec.source.model_copy(update={"stream": "card_events_baseline"})
        spec = base.spec.model_copy(update={"name": "card_events_baseline", "source": source})
        baseline = base.model_copy(update={"spec": spec})
        loop = engine_loop(baseline, str(home / "data" / "card_events_baseline"))
        results.append(
            run_load(
                "engine loop, no Airflow", "card_events_baseline", url, "card_events_baseline", tmp, loop
            )
        )
        stored_baseline = distinct("card_events_baseline")
        results[-1]["before"] = 0
    finally:
        stack.proc.terminate()
        stack.proc.wait(timeout=60)
    ok = True
    for result, (rows, unique) in zip(results, (stored, stored_baseline), strict=True):
        whole = (
            result["stored"] + result["quarantined"] == result["produced"]
            and result["quarantined"] == result["bad"]
        )
        once = rows == unique == result["produced"] - result["bad"] + result["before"]
        ok &= whole and once
        verdict = "exactly once" if whole and once else f"WRONG: {rows} rows, {unique} distinct"
        print(
            f"{result['name']:>24}: {result['events_per_second']:9,.0f} events/s sustained; "
            f"latency p50 {result['p50']:5.1f} s, p95 {result['p95']:5.1f} s; "
            f"peak lag {result['peak_lag_events']:,} events, {result['peak_lag_seconds']:.1f} s; "
            f"{result['batches']} batches; produced {result['produced']:,}, "
            f"stored {result['stored']:,} + quarantined {result['quarantined']:,} ({verdict})"
        )
    airflow, engine = results
    print(f"through Airflow / engine loop: {airflow['events_per_second'] / engine['events_per_second']:.2f}x")
    rate_ok, p95_ok = airflow["events_per_second"] >= TARGET_RATE, airflow["p95"] < TARGET_P95
    print(f"target >= {TARGET_RATE:,} events/s through Airflow: {'PASS' if rate_ok else 'FAIL'}")
    print(f"target p95 < {TARGET_P95:.0f} s through Airflow: {'PASS' if p95_ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

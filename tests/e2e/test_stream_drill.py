"""The card stream through ``make run``'s Airflow while things fail: a shard task SIGKILLed
mid-batch, the triggerer killed (``make run`` restarts it), Redis shut down and restarted (AOF
on). After the producer stops and the stream drains, every produced event is stored or
quarantined exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from base_platform.pipelines.data_storage import tables
from scripts.dev_stack import sqlite_iceberg_connection
from tests.conftest import ROOT
from tests.e2e.test_make_run import DevStack, _token

pytestmark = pytest.mark.e2e


def generator(url: str, rate: int, seconds: float, first: int) -> subprocess.Popen[str]:
    """``benchmarks.streamgen`` at ``rate`` for ``seconds``; the URL (it holds the password) goes
    by the environment, so no error message or process list shows it."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.streamgen", "--rate", str(rate), "--seconds", str(seconds),
         "--first", str(first), "--bad-fraction", "0.002"],
        cwd=ROOT, env=os.environ | {"BASE_STREAMS_REDIS_URL": url}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def produce(url: str, rate: int, seconds: float, first: int) -> dict[str, Any]:
    """Events into the stream at ``rate`` for ``seconds``; what was produced (the generator's JSON)."""
    running = generator(url, rate, seconds, first)
    output, _ = running.communicate(timeout=seconds + 60)
    assert running.returncode == 0, "the generator failed"
    produced: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return produced


def running_task(client: httpx.Client, task_id: str, seconds: float) -> str:
    """The id of a ``task_id`` instance of pipeline_card_events that is running now."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = client.get("/dags/pipeline_card_events/dagRuns", params={"state": "running"}).json()
        for run in runs["dag_runs"]:
            found = client.get(f"/dags/pipeline_card_events/dagRuns/{run['dag_run_id']}/taskInstances").json()
            for ti in found["task_instances"]:
                if ti["task_id"] == task_id and ti["state"] == "running":
                    return str(ti["id"])
        time.sleep(0.2)
    raise AssertionError(f"no {task_id} ran within {seconds:.0f} s")


def kill_task(ti_id: str) -> int:
    """SIGKILL the process running that task instance (its title is ``airflow worker -- <id>``)."""
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"airflow worker -- {ti_id}" in title:
            os.kill(int(proc.name), signal.SIGKILL)
            return int(proc.name)
    raise AssertionError(f"no process runs task instance {ti_id}")


def redis_run_id(url: str) -> str | None:
    """The Redis server's run id (a new one per start), or None while it is down or still
    loading its append-only file."""
    try:
        info: Any = redis.Redis.from_url(url).info()
    except redis.ConnectionError:
        return None
    return None if info["loading"] else str(info["run_id"])


def retried(client: httpx.Client) -> bool:
    """Whether some shard task of pipeline_card_events ran a second time."""
    dag = "/dags/pipeline_card_events/dagRuns"
    return any(
        ti["task_id"] == "process_shard" and ti["try_number"] > 1
        for run in client.get(dag).json()["dag_runs"]
        for ti in client.get(f"{dag}/{run['dag_run_id']}/taskInstances").json()["task_instances"]
    )


def rows(client: httpx.Client, name: str) -> int:
    listed = client.get("/datasets").json()
    return int({d["name"]: d["rows"] for d in listed}[name])


@pytest.mark.timeout(900)
def test_every_event_is_committed_once_through_a_killed_shard_a_killed_triggerer_and_a_redis_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    stack = DevStack(home)
    try:
        stack.wait_ready()
        token = _token(stack, "admin", home)
        auth = {"Authorization": f"Bearer {token}"}
        api = httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}/api/v2", headers=auth, timeout=60)
        page = httpx.Client(
            base_url=f"http://127.0.0.1:{stack.api_port}/base-platform/api", headers=auth, timeout=60
        )
        password = json.loads((home / "local-secrets.json").read_text())["streams_redis_password"]
        port = stack.stack.streams_port
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        api.patch("/dags/pipeline_card_events", json={"is_paused": False}).raise_for_status()
        produced = [produce(url, 50, 1, 0)]  # warm-up: the watcher's trigger is up once it commits
        deadline = time.monotonic() + 180
        while rows(page, "card_events") < produced[0]["events"] - produced[0]["bad"]:
            assert time.monotonic() < deadline, "the warm-up events were not committed"
            time.sleep(2)

        # while the next events are produced: SIGKILL the first shard task, then the triggerer
        producing = generator(url, 20000, 20, 1_000_000)
        killed = kill_task(running_task(api, "process_shard", 90))
        os.kill(stack.stack.pids["triggerer"], signal.SIGKILL)  # make run restarts it
        output, _ = producing.communicate(timeout=120)
        produced.append(json.loads(output.strip().splitlines()[-1]))
        with contextlib.suppress(AssertionError):  # a batch being read, if one still is
            running_task(api, "process_shard", 30)
        before = redis_run_id(url)
        redis.Redis.from_url(url).shutdown()  # AOF written first; make run starts it again from it
        deadline = time.monotonic() + 60
        while (after := redis_run_id(url)) in (before, None):
            assert time.monotonic() < deadline, "the streams' Redis did not come back"
            time.sleep(0.5)
        produced.append(produce(url, 10000, 10, 2_000_000))

        good = sum(p["events"] - p["bad"] for p in produced)
        deadline = time.monotonic() + 300
        while rows(page, "card_events") < good:
            assert time.monotonic() < deadline, f"{rows(page, 'card_events')} of {good} events committed"
            time.sleep(3)
        time.sleep(5)
        assert rows(page, "card_events") == good, killed  # none twice, none lost
        assert retried(api) and after != before  # the killed shard ran again; Redis restarted
        monkeypatch.setenv(
            "AIRFLOW_CONN_ICEBERG_DEFAULT",
            json.dumps(sqlite_iceberg_connection(home / "iceberg.db", home / "warehouse")),
        )
        table = tables.load("card_events")
        assert table is not None
        ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
        quarantined = sum(record.rows_quarantined for record in tables.history(table, limit=10_000))
        assert len(ids) == len(set(ids)) == good and quarantined == sum(p["bad"] for p in produced)
    finally:
        assert stack.ctrl_c() == 0

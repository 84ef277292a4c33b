"""Kill a process at the worst moment, then check that nothing was lost or done twice.

The drills run in this order on one stack; each kill takes the first of a pair for good
(``BASE_DEV_NO_RESTART``), so every later drill runs on the peers that are left.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.drills.conftest import Drill, new_transactions, settle_pipeline, wait_until
from tests.e2e.rest_client import Client

pytestmark = pytest.mark.drill
DEPLOY = {"environment": "dev", "waves": ["core", "shared"]}
SMOKE_APPS = [f"drill-{n:02d}" for n in range(1, 25)]  # Progressing 60 s (drills.yaml)
# triggerer_health_check_threshold (30 s, Airflow's default) + a heartbeat (5 s) + a trigger loop.
TAKEOVER_BOUND_SECONDS = 45
RUN_BOUND_SECONDS = 300  # a drilled run ends within this; each took under 2 minutes when measured
# The smoke sensors' triggers, and which triggerer holds them (the stream pipelines' asset
# watchers are triggers too, and may sit on either).
SMOKE_TRIGGERS = (
    " FROM trigger JOIN task_instance"
    " ON task_instance.trigger_id = trigger.id AND task_instance.dag_id = 'argocd_smoke'"
)
SMOKE_TRIGGERERS = "SELECT DISTINCT trigger.triggerer_id" + SMOKE_TRIGGERS
# A trigger is made unheld (NULL) first: a triggerer takes it on its next loop.
SMOKE_TRIGGERS_HELD = "SELECT count(*)" + SMOKE_TRIGGERS + " WHERE trigger.triggerer_id IS NOT NULL"
SMOKE_TRIGGERS_ON = (
    "SELECT count(*)" + SMOKE_TRIGGERS + " WHERE trigger.triggerer_id IS NULL OR trigger.triggerer_id = :dead"
)
UNFINISHED = {"running", "queued", "scheduled", "up_for_retry", "deferred", "restarting"}
PROBES = ("/dags", "/dags/~/dagRuns")  # two reads of the metadata DB through the REST API
SERVER_ERROR = re.compile(r"request finished.*status_code\W*5\d\d")  # the API server's access log


def in_state(client: Client, dag_id: str, run_id: str, state: str) -> list[dict[str, Any]]:
    return [ti for ti in client.task_instances(dag_id, run_id) if ti["state"] == state]


def unfinished_anywhere(client: Client) -> list[tuple[str, str, str]]:
    """Every task instance of every run that is not done: none may be left without an owner."""
    answer = client.http.get("/dags/~/dagRuns/~/taskInstances", params={"limit": 1000})
    return [
        (ti["dag_id"], ti["task_id"], ti["state"])
        for ti in answer.json()["task_instances"]
        if ti["state"] in UNFINISHED
    ]


def start_deploy(drill: Drill) -> str:
    """A core+shared deploy on a fresh simulator (so each app's event log starts empty)."""
    drill.sim("POST", "/sandbox/reset", json={"scenario": "drills.yaml"})
    return drill.clients["ops"].start("platform_deploy", DEPLOY)


def assert_synced_once(drill: Drill, run_id: str) -> None:
    """The deploy succeeded, and the simulator's event log shows each component synced once."""
    ops = drill.clients["ops"]
    report = ops.http.get(
        f"/dags/platform_deploy/dagRuns/{run_id}/taskInstances/summary/xcomEntries/report"
    ).json()["value"]
    components = [row["component"] for row in report["components"]]
    assert len(components) == 7, components  # core 4, shared 3
    assert {name: drill.syncs(name) for name in components} == dict.fromkeys(components, 1)
    left = [(ti["task_id"], ti["state"]) for ti in ops.task_instances("platform_deploy", run_id)]
    assert all(state in {"success", "skipped"} for _, state in left), left


def transactions_keys(drill: Drill) -> tuple[int, int]:
    """Rows in the curated table at its current snapshot, and distinct transaction ids among them."""
    from pyiceberg.table import StaticTable

    location = drill.metadata(
        "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'transactions'", db="iceberg"
    )
    ids = StaticTable.from_metadata(str(location)).scan(selected_fields=("transaction_id",)).to_arrow()
    return ids.num_rows, len(set(ids.column("transaction_id").to_pylist()))


def wait_through(client: Client, dag_id: str, run_id: str, seconds: float) -> str:
    """A run's end state, waiting through the errors of a database or broker restart."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = client.http.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        if answer.status_code == 200 and answer.json()["state"] in ("success", "failed"):
            return str(answer.json()["state"])
        time.sleep(2)
    raise AssertionError(f"{dag_id} {run_id} did not finish within {seconds:.0f} s")


def restarts_since(drill: Drill, line: int) -> list[str]:
    """The services the supervisor restarted after output line ``line``."""
    return [text.split()[0] for text in drill.stack.output[line:] if "; restarting" in text]


def running_shards(client: Client, run_id: str) -> list[dict[str, Any]]:
    running = in_state(client, "pipeline_transactions", run_id, "running")
    return [ti for ti in running if ti["task_id"] == "process_shard" and ti["pid"]]


@pytest.mark.timeout(900)
def test_a_scheduler_killed_mid_deploy_loses_nothing_and_syncs_nothing_twice(drill: Drill) -> None:
    ops = drill.clients["ops"]
    run_id = start_deploy(drill)
    wait_until("a deploy sensor deferred", 240, lambda: in_state(ops, "platform_deploy", run_id, "deferred"))
    drill.kill("scheduler")

    assert ops.wait_for("platform_deploy", run_id, RUN_BOUND_SECONDS) == "success"
    assert_synced_once(drill, run_id)
    assert unfinished_anywhere(ops) == []


@pytest.mark.timeout(900)
def test_a_triggerer_killed_with_24_sensors_deferred_hands_them_to_its_peer(drill: Drill) -> None:
    """triggerer-2 is paused while the sensors defer, so they all land on the one killed."""
    admin = drill.clients["admin"]
    drill.pause("triggerer-2", True)
    try:
        assert admin.http.patch("/dags/argocd_smoke", json={"is_paused": False}).status_code == 200
        runs = []
        for app in SMOKE_APPS:
            answer = admin.trigger("argocd_smoke", {"app_name": app})
            assert answer.status_code == 200, answer.text
            runs.append(answer.json()["dag_run_id"])

        def deferred() -> int:
            answer = admin.http.get(
                "/dags/argocd_smoke/dagRuns/~/taskInstances", params={"state": "deferred"}
            )
            return int(answer.json()["total_entries"])

        def held() -> bool:  # deferred is not enough: the last trigger may not be taken yet
            return deferred() == len(SMOKE_APPS) and drill.metadata(SMOKE_TRIGGERS_HELD) == len(SMOKE_APPS)

        wait_until("24 sensors deferred, each trigger held", 300, held)
    finally:
        drill.pause("triggerer-2", False)
    holders = drill.metadata(f"SELECT count(*) FROM ({SMOKE_TRIGGERERS}) AS holders")  # noqa: S608 -- constants
    assert holders == 1  # all on the one about to be killed
    dead = drill.metadata(SMOKE_TRIGGERERS)
    killed = time.monotonic()
    drill.kill("triggerer")
    wait_until("the triggers taken over", 120, lambda: drill.metadata(SMOKE_TRIGGERS_ON, dead=dead) == 0)
    takeover = time.monotonic() - killed
    print(f"\ntriggerer takeover: {len(SMOKE_APPS)} triggers on triggerer-2 {takeover:.1f} s after the kill")
    assert takeover < TAKEOVER_BOUND_SECONDS

    for run_id in runs:
        assert admin.wait_for("argocd_smoke", run_id, 300) == "success"
        (sync,) = admin.task_instances("argocd_smoke", run_id)
        assert (sync["state"], sync["try_number"]) == ("success", 1)  # resumed, not retried


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_shard_retries_it_and_stores_each_row_once(drill: Drill) -> None:
    """The worker running the shard is killed, whichever it is; the other must finish it."""
    ds = drill.clients["data-scientist"]
    settle_pipeline(ds)
    # one shard (254 MB, under shard_mb's 256 MiB) of about 6 s of work on 2 cores; 1,000,000 rows
    # took 3.9 s, and a CI run found the shard done 5 s after it started
    rows = new_transactions(drill.stack.home, 1_500_000, 1_000_000, "drill-worker")
    run_id = ds.start("pipeline_transactions", {})
    wait_until("a shard running", 240, lambda: running_shards(ds, run_id))
    time.sleep(2)  # past the task's start (0.5 s), into the shard's work
    (shard,) = running_shards(ds, run_id)
    drill.kill(drill.service_running(shard["pid"]))

    assert ds.wait_for("pipeline_transactions", run_id, RUN_BOUND_SECONDS) == "success"
    shards = [
        ti for ti in ds.task_instances("pipeline_transactions", run_id) if ti["task_id"] == "process_shard"
    ]
    assert max(ti["try_number"] for ti in shards) == 2, shards  # the killed shard ran again
    manifest = ds.http.get(
        f"/dags/pipeline_transactions/dagRuns/{run_id}/taskInstances/commit/xcomEntries/return_value"
    ).json()["value"]
    assert manifest["rows_in"] == rows == manifest["rows_stored"] + manifest["rows_quarantined"]
    stored, distinct = transactions_keys(drill)
    assert stored == distinct  # no row of the killed try was stored twice


@pytest.mark.timeout(900)
def test_postgres_restarted_mid_run_every_service_reconnects_and_both_runs_finish(drill: Drill) -> None:
    ops, ds = drill.clients["ops"], drill.clients["data-scientist"]
    settle_pipeline(ds)
    rows = new_transactions(drill.stack.home, 300_000, 5_000_000, "drill-postgres")
    deploy = start_deploy(drill)
    pipeline = ds.trigger("pipeline_transactions", {}).json()["dag_run_id"]
    wait_until("a deploy sensor deferred", 240, lambda: in_state(ops, "platform_deploy", deploy, "deferred"))
    wait_until("a shard running", 240, lambda: running_shards(ds, pipeline))
    line = len(drill.stack.output)
    drill.database.restart()
    access_log = drill.stack.home / "logs" / "api-server.log"
    served_before = access_log.stat().st_size
    # Every pooled connection of the API server's workers died: each must be checked before use, not
    # fail a call. A new TCP connection per read lets either worker take it, not only the one that
    # a kept-alive connection (or a task's call) had already made renew its pool.
    answers = [
        ops.http.get(path, params={"limit": 1}, headers={"Connection": "close"}).status_code
        for _ in range(10)
        for path in PROBES
    ]
    assert set(answers) == {200}, f"the REST API right after the restart answered {answers}"

    assert wait_through(ops, "platform_deploy", deploy, RUN_BOUND_SECONDS) == "success"
    assert wait_through(ds, "pipeline_transactions", pipeline, RUN_BOUND_SECONDS) == "success"
    assert_synced_once(drill, deploy)
    manifest = ds.http.get(
        f"/dags/pipeline_transactions/dagRuns/{pipeline}/taskInstances/commit/xcomEntries/return_value"
    ).json()["value"]
    assert manifest["rows_in"] == rows == manifest["rows_stored"] + manifest["rows_quarantined"]
    stored, distinct = transactions_keys(drill)
    assert stored == distinct
    assert unfinished_anywhere(ops) == []
    assert restarts_since(drill, line) == []  # each service reconnected by itself; none was restarted
    with access_log.open("rb") as served:
        served.seek(served_before)
        errors = [
            text for text in served.read().decode(errors="replace").splitlines() if SERVER_ERROR.search(text)
        ]
    assert errors == []  # nor did any call of a task (heartbeats, state) fail on a dead connection


@pytest.mark.timeout(600)
def test_redis_restarted_with_tasks_queued_loses_none(drill: Drill) -> None:
    """The workers are paused, so the run's tasks wait in Redis when it restarts."""
    admin = drill.clients["admin"]
    for worker in ("celery-worker", "celery-worker-2"):
        drill.pause(worker, True)
    try:
        run_id = admin.start("platform_validate", {"environment": "dev", "scope": "core"})
        wait_until("tasks queued in Redis", 120, lambda: drill.queued_messages() > 0)
        queued = drill.queued_messages()
        drill.restart_broker()
        assert drill.queued_messages() == queued  # the AOF kept every message
    finally:
        for worker in ("celery-worker", "celery-worker-2"):
            drill.pause(worker, False)
    # Well inside task_queued_timeout (600 s), after which Airflow would requeue lost tasks itself.
    assert wait_through(admin, "platform_validate", run_id, 240) == "success"
    assert all(ti["try_number"] == 1 for ti in admin.task_instances("platform_validate", run_id))

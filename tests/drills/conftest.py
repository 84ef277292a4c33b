"""One production-topology stack for the drills: Postgres, Redis with an AOF, CeleryExecutor with
two schedulers, triggerers and workers, started natively and driven over REST.

A killed service stays dead (``BASE_DEV_NO_RESTART``), so what a drill sees done was done by its
peer, not by a restart. ``BASE_DRILL_OFF`` turns one fault-tolerance setting off, to show the
drills that depend on it fail (docs/reliability.md):

    BASE_DRILL_OFF=peers make drills        # one scheduler, triggerer and worker
    BASE_DRILL_OFF=broker-aof make drills   # the broker's Redis keeps nothing across a restart
    BASE_DRILL_OFF=pre-ping make drills     # pooled database connections are not checked before use
    BASE_DRILL_OFF=heartbeat make drills    # Airflow's default 300 s task heartbeat timeout
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.datagen import generate
from scripts.dev_stack import Launched, launch, running
from tests.conftest import free_port
from tests.e2e.rest_client import Client, role_clients
from tests.e2e.services import Postgres, postgres_server, redis

OFF = os.environ.get("BASE_DRILL_OFF", "")
SETTINGS = ("peers", "broker-aof", "pre-ping", "heartbeat")
if OFF and OFF not in SETTINGS:
    raise pytest.UsageError(f"BASE_DRILL_OFF must be one of {', '.join(SETTINGS)}, not {OFF!r}")
# A killed service stays dead, so its peer must carry on: the first scheduler and triggerer, and
# whichever worker runs the shard the worker drill kills.
KILLED_FOR_GOOD = "scheduler,triggerer,celery-worker,celery-worker-2"
# What the drills shorten from Airflow's defaults, so a dead worker's task is noticed in seconds:
# the bound a drill measures scales with these (docs/reliability.md gives production's values).
DRILL_TIMINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "300" if OFF == "heartbeat" else "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
    "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "32",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "32",
} | ({"AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_PRE_PING": "False"} if OFF == "pre-ping" else {})
SIM_TOKEN = "sandbox-token"  # the simulator's scenario token (sandbox/argocd/scenario.py)


def start_broker(broker: ExitStack, base: Path, port: int) -> str:
    """The Celery broker's Redis, on a fixed port so that a restart keeps its URL."""
    aof = (
        ("--appendonly", "no") if OFF == "broker-aof" else ("--appendonly", "yes", "--appendfsync", "always")
    )
    return broker.enter_context(redis(base, *aof, port=port))


@dataclass
class Drill:
    """The drills' stack, and the faults they inject into it."""

    stack: Launched
    database: Postgres
    broker: ExitStack
    broker_dir: Path
    broker_port: int
    sim_port: int
    clients: dict[str, Client] = field(default_factory=dict)

    def restart_broker(self) -> None:
        """Stop Redis (SIGTERM: it writes what it is configured to keep) and start it again."""
        self.broker.close()
        self.broker = ExitStack()
        start_broker(self.broker, self.broker_dir, self.broker_port)

    def pause(self, service: str, paused: bool) -> None:
        """SIGSTOP or SIGCONT a service; one absent (killed, or BASE_DRILL_OFF=peers) is left alone."""
        with contextlib.suppress(KeyError, ProcessLookupError):
            os.killpg(self.stack.pids[service], signal.SIGSTOP if paused else signal.SIGCONT)

    def service_running(self, pid: int) -> str:
        """The service whose process tree holds ``pid`` (a task's process: the worker running it)."""
        services = {service_pid: name for name, service_pid in self.stack.pids.items()}
        while pid > 1 and pid not in services:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])  # the parent's pid
        return services[pid]

    def metadata(self, sql: str, db: str = "airflow", **params: object) -> Any:
        """One value from the metadata database (or another database on its server)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database.database_url(db))
        try:
            with engine.connect() as connection:
                return connection.execute(text(sql), params).scalar()
        finally:
            engine.dispose()

    def queued_messages(self) -> int:
        """Celery task messages waiting in the broker's ``default`` queue."""
        answer = subprocess.run(
            ["redis-cli", "-p", str(self.broker_port), "llen", "default"], capture_output=True, text=True
        )
        return int(answer.stdout.strip() or 0)

    def kill(self, service: str) -> None:
        """SIGKILL a service's whole process group: the service and every task it runs."""
        os.killpg(self.stack.pids[service], signal.SIGKILL)
        self.stack.read_until(rf"{service} exited with -9; not restarted", 30)

    def sim(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """A call to the Argo CD simulator, as the scenario's API client."""
        headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
        url = f"http://127.0.0.1:{self.sim_port}{path}"
        answer = httpx.request(method, url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
        answer.raise_for_status()
        return answer

    def syncs(self, app: str) -> int:
        """How many syncs of ``app`` have completed: its events (one per history entry)."""
        answer = httpx.get(
            f"http://127.0.0.1:{self.sim_port}/api/v1/applications/{app}/events",
            headers={"Authorization": f"Bearer {SIM_TOKEN}"},
            timeout=30,
        )
        return 0 if answer.status_code == 404 else len(answer.json()["items"])


@pytest.fixture(scope="session")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    base = tmp_path_factory.mktemp("drills")
    broker_dir, broker_port, sim_port = base / "broker", free_port(), free_port()
    with postgres_server() as database, ExitStack() as broker:
        launched = launch(
            base / "home",
            free_port(),
            sim_port,
            free_port(),
            {
                "BASE_DEV_EXECUTOR": "celery",
                "BASE_DEV_DATABASE_URL": database.url,
                "BASE_DEV_ICEBERG_URL": database.database_url("iceberg"),
                "BASE_DEV_BROKER_URL": start_broker(broker, broker_dir, broker_port),
                "BASE_DEV_REPLICAS": "1" if OFF == "peers" else "2",
                "BASE_DEV_NO_RESTART": KILLED_FOR_GOOD,
                "ARGOCD_SIM_SCENARIO": "drills.yaml",
                **DRILL_TIMINGS,
            },
        )
        drill = Drill(launched, database, broker, broker_dir, broker_port, sim_port)
        try:
            with running(launched, seconds=300):
                drill.clients = role_clients(launched)
                yield drill
        finally:
            drill.broker.close()


def wait_until(what: str, seconds: float, check: object) -> float:
    """Poll ``check()`` every half second until it is true; the seconds it took."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - started


_ISSUED_IDS: list[range] = []


def new_transactions(home: Path, rows: int, first_id: int, prefix: str) -> int:
    """A new drop of ``rows`` transactions for pipeline_transactions, moved in whole. Its ids may
    not overlap another drill's: the drills count duplicate ids in the one table they share."""
    ids = range(first_id, first_id + rows)
    clash = [other for other in _ISSUED_IDS if ids.start < other.stop and other.start < ids.stop]
    assert not clash, f"{prefix}: ids {ids} overlap {clash}, which another drill already wrote"
    _ISSUED_IDS.append(ids)
    staging = home / "staging" / prefix
    summary = generate(rows, "csv", 0.02, staging, files=1, seed=first_id, first_id=first_id, prefix=prefix)
    incoming = home / "data" / "transactions" / "incoming"
    for name in summary.files:
        shutil.move(staging / name, incoming / name)
    return summary.rows


def settle_pipeline(client: Client) -> None:
    """pipeline_transactions unpaused and idle, with the files already there committed: unpausing
    may start a scheduled run too, which would take a drill's new file."""
    client.start("pipeline_transactions", {})
    wait_until("pipeline_transactions idle", 300, lambda: client.idle("pipeline_transactions"))

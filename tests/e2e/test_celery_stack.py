"""The production topology, natively: Postgres, Redis, CeleryExecutor with one worker, the
api-server, scheduler, dag-processor and triggerer, and the FAB auth manager with the roles of
config/roles.yaml. Driven over REST only.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.dev_stack import Launched, launch, running
from tests.conftest import ROOT, free_port
from tests.e2e.rest_client import Client, role_clients
from tests.e2e.services import postgres, redis

pytestmark = pytest.mark.e2e
DEPLOY = {"environment": "dev", "waves": ["core"], "components": ["argocd"]}
BROKER: dict[str, str] = {}  # the module's stack's Celery broker


APPROVAL_TIMEOUT_SECONDS = 20


def short_approval_config(base: Path) -> Path:
    """The project's config, with prod's approval timing out in seconds instead of hours."""
    config = base / "config"
    shutil.copytree(ROOT / "config", config)
    prod = config / "environments" / "prod.yaml"
    text = prod.read_text()
    assert "  timeout: 4h" in text
    prod.write_text(text.replace("  timeout: 4h", f"  timeout: {APPROVAL_TIMEOUT_SECONDS}s"))
    return config


def iceberg_url(database: str) -> str:
    """The Iceberg catalog's database on the same server as Airflow's."""
    return database.rsplit("/", 1)[0] + "/iceberg"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """Airflow's metadata database on a Postgres of the module's own."""
    with postgres() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Launched]:
    base = tmp_path_factory.mktemp("celery")
    with redis(base / "redis") as broker:
        BROKER["url"] = broker
        launched = launch(
            base / "home",
            free_port(),
            free_port(),
            free_port(),
            {
                "BASE_DEV_EXECUTOR": "celery",
                "BASE_DEV_DATABASE_URL": database,
                "BASE_DEV_ICEBERG_URL": iceberg_url(database),
                "BASE_DEV_BROKER_URL": broker,
                "ARGOCD_SIM_SCENARIO": "slow.yaml",  # apps stay Progressing 15 s: sensors defer
                "BASE_PLATFORM_CONFIG_DIR": str(short_approval_config(base)),
            },
        )
        with running(launched, seconds=300):
            yield launched


@pytest.fixture(scope="module")
def clients(stack: Launched) -> dict[str, Client]:
    return role_clients(stack)


@pytest.mark.timeout(600)
def test_developer_deploys_over_rest_and_a_triggerer_restart_loses_nothing(
    stack: Launched, clients: dict[str, Client]
) -> None:
    dev = clients["developer"]
    run_id = dev.start("platform_deploy", DEPLOY)

    deadline = time.monotonic() + 240
    deferred: list[str] = []
    while not deferred:
        assert time.monotonic() < deadline, "no sensor deferred"
        deferred = [
            ti["task_id"] for ti in dev.task_instances("platform_deploy", run_id) if ti["state"] == "deferred"
        ]
        time.sleep(1)
    os.killpg(stack.pids["triggerer"], signal.SIGKILL)
    stack.read_until(r"triggerer exited with -9; restarting", 30)
    stack.read_until(r"started triggerer", 10)

    assert dev.wait_for("platform_deploy", run_id, 420) == "success"
    after = {ti["task_id"]: ti for ti in dev.task_instances("platform_deploy", run_id)}
    for task_id in deferred:
        assert after[task_id]["state"] == "success"
        assert after[task_id]["try_number"] == 1  # resumed by the new triggerer, not retried


def test_two_schedulers_and_two_triggerers_are_alive_and_two_workers_answer(
    stack: Launched, clients: dict[str, Client]
) -> None:
    """The production topology runs two of each service that can fail (issue "Reliability
    drills"): both schedulers and both triggerers heartbeat into the jobs table, both workers
    answer Celery's ping."""
    import subprocess

    admin = clients["admin"]
    deadline = time.monotonic() + 120
    alive: dict[str, int] = {}
    while time.monotonic() < deadline:
        for job_type in ("SchedulerJob", "TriggererJob"):
            jobs = admin.http.get("/jobs", params={"job_type": job_type, "is_alive": True}).json()["jobs"]
            alive[job_type] = len(jobs)
        if alive == {"SchedulerJob": 2, "TriggererJob": 2}:
            break
        time.sleep(2)
    assert alive == {"SchedulerJob": 2, "TriggererJob": 2}, alive
    assert {
        "scheduler",
        "scheduler-2",
        "triggerer",
        "triggerer-2",
        "celery-worker",
        "celery-worker-2",
    } <= set(stack.pids)
    app = "airflow.providers.celery.executors.celery_executor.app"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_HOME": str(stack.home / "celery-cli"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": BROKER["url"],
    }
    ping = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "celery"), "--app", app, "inspect", "ping", "--timeout", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ping.stdout.count("pong") == 2 and "worker-1@" in ping.stdout and "worker-2@" in ping.stdout, ping


PROD_DEPLOY = {"environment": "prod", "waves": ["core"], "components": ["argocd"]}


@pytest.mark.timeout(600)
def test_prod_approval_only_by_a_named_approver_who_did_not_trigger_it(
    stack: Launched, clients: dict[str, Client]
) -> None:
    """prod names the admin role as approvers: ops may approve what admin triggered; admin may not
    approve their own request, and the developer role may not approve at all."""
    admin, ops, dev = clients["admin"], clients["ops"], clients["developer"]
    run_id = admin.start("platform_deploy", PROD_DEPLOY)
    admin.wait_for_task("platform_deploy", run_id, "approve", {"awaiting_input", "deferred"}, 240)
    assert admin.answer_approval(run_id, "Approve").status_code == 403  # triggered it
    assert dev.answer_approval(run_id, "Approve").status_code == 403  # not an approver
    assert admin.task_state("platform_deploy", run_id, "approve") in {"awaiting_input", "deferred"}
    answer = ops.answer_approval(run_id, "Approve")
    assert answer.status_code == 200, answer.text
    assert answer.json()["responded_by"]["name"] == "ops"
    assert admin.wait_for_task("platform_deploy", run_id, "approve", {"success", "failed"}, 120) == "success"
    # The deploy itself is not what this test is about: end it, so the next prod run can start.
    ended = admin.http.patch(f"/dags/platform_deploy/dagRuns/{run_id}", json={"state": "failed"})
    assert ended.status_code == 200, ended.text

    unanswered = admin.start("platform_deploy", PROD_DEPLOY)
    state = admin.wait_for_task(
        "platform_deploy", unanswered, "approve", {"success", "failed"}, APPROVAL_TIMEOUT_SECONDS + 180
    )
    assert state == "failed"
    assert admin.wait_for("platform_deploy", unanswered, 120) == "failed"
    states = {ti["task_id"]: ti["state"] for ti in admin.task_instances("platform_deploy", unanswered)}
    assert states["core.argocd"] in {"upstream_failed", None}  # nothing was deployed


BAD_DESTROY = {"environment": "dev", "waves": ["shared"], "confirm": "dev", "stuck_after_seconds": 1}


@pytest.mark.parametrize(
    ("role", "method", "path", "expected"),
    [
        # admin: everything, teardown included (400: authorized, then refused by the params).
        ("admin", "GET", "/dags/platform_destroy", 200),
        ("admin", "TRIGGER", "platform_destroy", 400),
        ("admin", "GET", "/dags/argocd_smoke", 200),
        # developer: the platform DAGs, but only admin may trigger a teardown.
        ("developer", "GET", "/dags/platform_deploy", 200),
        ("developer", "GET", "/dags/platform_destroy", 200),
        ("developer", "GET", "/dags/platform_destroy/dagRuns", 200),
        ("developer", "TRIGGER", "platform_destroy", 403),
        ("developer", "TRIGGER", "platform_validate", 400),
        ("developer", "PATCH", "/dags/platform_destroy", 403),
        ("developer", "TRIGGER", "pipeline_transactions", 400),
        # data-scientist: no platform DAG, not even to look at.
        ("data-scientist", "GET", "/dags/platform_deploy", 403),
        ("data-scientist", "GET", "/dags/platform_deploy/dagRuns", 403),
        ("data-scientist", "TRIGGER", "platform_deploy", 403),
        ("data-scientist", "TRIGGER", "platform_destroy", 403),
        ("data-scientist", "GET", "/dags/argocd_smoke", 403),
        # ... but the pipelines, to see and to trigger (400: authorized, then refused by the params).
        ("data-scientist", "GET", "/dags/pipeline_transactions", 200),
        ("data-scientist", "GET", "/dags/pipeline_transactions/dagRuns", 200),
        ("data-scientist", "TRIGGER", "pipeline_transactions", 400),
        # no role may touch connections except admin.
        ("developer", "GET", "/connections", 403),
        ("data-scientist", "GET", "/connections", 403),
        ("admin", "GET", "/connections", 200),
    ],
)
def test_each_role_boundary_over_rest(
    clients: dict[str, Client], role: str, method: str, path: str, expected: int
) -> None:
    client = clients[role]
    if method == "TRIGGER":
        bad_conf: dict[str, dict[str, Any]] = {
            "platform_destroy": BAD_DESTROY,
            "pipeline_transactions": {"full_refresh": "yes"},
        }
        conf = bad_conf.get(path, {"environment": "qa"})
        answer = client.trigger(path, conf)
    elif method == "PATCH":
        answer = client.http.patch(path, json={"is_paused": True})
    else:
        answer = client.http.get(path)
    assert answer.status_code == expected, (role, method, path, answer.text)


def test_each_role_lists_exactly_its_dags(clients: dict[str, Client]) -> None:
    def listed(role: str) -> set[str]:
        """The DAGs a role sees."""
        answer = clients[role].http.get("/dags", params={"limit": 100})
        assert answer.status_code == 200, answer.text
        return {dag["dag_id"] for dag in answer.json()["dags"]}

    everything = listed("admin")
    assert {"platform_deploy", "platform_destroy", "argocd_smoke", "pipeline_transactions"} <= everything
    assert "dataset_rollback" in everything
    assert "publish_transactions" in everything
    assert listed("developer") == {
        d for d in everything if d.startswith(("platform_", "pipeline_", "dataset_", "publish_"))
    }
    assert listed("data-scientist") == {
        d
        for d in everything
        if d.startswith(("pipeline_", "publish_")) or d in ("dataset_sample", "dataset_split")
    }


def test_a_wrong_password_gets_no_token(stack: Launched) -> None:
    answer = httpx.post(f"{stack.api}/auth/token", json={"username": "dev", "password": "wrong"})
    assert answer.status_code == 401


@pytest.mark.timeout(300)
def test_a_data_scientist_runs_the_transactions_pipeline_on_celery(
    stack: Launched, clients: dict[str, Client], database: str
) -> None:
    ds = clients["data-scientist"]
    ds.unpause_and_settle("pipeline_transactions")
    run_id = ds.start("pipeline_transactions", {"full_refresh": True})
    assert ds.wait_for("pipeline_transactions", run_id, 240) == "success"
    states = {ti["task_id"]: ti["state"] for ti in ds.task_instances("pipeline_transactions", run_id)}
    assert states["commit"] == states["catalog"] == states["monitor"] == "success", states
    manifest = ds.http.get(
        f"/dags/pipeline_transactions/dagRuns/{run_id}/taskInstances/commit/xcomEntries/return_value"
    ).json()["value"]
    assert manifest["rows_in"] == 20_000 == manifest["rows_stored"] + manifest["rows_quarantined"]
    # The snapshot is in the Postgres catalog, in its own database, as in the production stack.
    from sqlalchemy import create_engine, text

    catalog = create_engine(iceberg_url(database))
    with catalog.connect() as db:
        rows = db.execute(text("SELECT table_namespace, table_name, metadata_location FROM iceberg_tables"))
        ((namespace, name, metadata),) = list(rows)
    catalog.dispose()
    assert (namespace, name) == ("base", "transactions") and metadata.endswith(".metadata.json")
    assert manifest["snapshot_id"] and manifest["dag_run"] == f"pipeline_transactions/{run_id}"


def test_an_unknown_environment_is_a_400_on_the_page_and_metrics(
    stack: Launched, clients: dict[str, Client]
) -> None:
    admin = {"Authorization": clients["admin"].http.headers["Authorization"]}
    for path in ("/api/platform", "/metrics", "/api/drift"):
        answer = httpx.get(f"{stack.api}/base-platform{path}", params={"environment": "qa"}, headers=admin)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "unknown environment 'qa'" in answer.text

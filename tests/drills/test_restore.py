"""Back up a stack with history, destroy it, restore onto a fresh one, and check what came back.

The last drill (it destroys the drills' stack). Backups go to moto's S3 through the
``platform_backup`` connection, by the ``platform_backup`` DAG; the restore is ``platformctl
restore`` onto a new Postgres server, then a new stack on the same warehouse and the same Fernet
key (both outlive the stack: object storage, and the secret store).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.dev_stack import launch, postgres_iceberg_connection, running
from tests.conftest import ROOT, doc_block, free_port
from tests.drills.conftest import DRILL_TIMINGS, Drill, new_transactions, wait_until
from tests.e2e.rest_client import Client, role_clients
from tests.e2e.services import postgres_server

pytestmark = pytest.mark.drill
BUCKET, KEEP = "backups", 2
MOTO = {"login": "moto-access-key", "password": "moto-secret-key"}
HISTORY = ("platform_deploy", "argocd_smoke", "pipeline_transactions", "platform_validate")
RTO_TARGET_SECONDS = 4 * 3600


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log, under make drills' -s
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=(port := free_port()))
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=MOTO["login"],
        aws_secret_access_key=MOTO["password"],
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def backup_connection(endpoint: str) -> dict[str, Any]:
    location = f"s3://{BUCKET}/platform"
    extra = {"endpoint_url": endpoint, "region_name": "us-east-1", "location": location, "keep": KEEP}
    return {"connection_id": "platform_backup", "conn_type": "aws", **MOTO, "extra": json.dumps(extra)}


def run_count(client: Client, dag_id: str) -> int:
    answer = client.http.get(f"/dags/{dag_id}/dagRuns", params={"limit": 1, "state": ["success", "failed"]})
    return int(answer.json()["total_entries"])


def backup_now(admin: Client, seconds: float = 240) -> dict[str, Any]:
    run_id = admin.trigger("platform_backup", {}).json()["dag_run_id"]
    assert admin.wait_for("platform_backup", run_id, seconds) == "success"
    path = f"/dags/platform_backup/dagRuns/{run_id}/taskInstances/backup/xcomEntries/return_value"
    manifest: dict[str, Any] = admin.http.get(path).json()["value"]
    return manifest


def stored_backups(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=MOTO["login"], aws_secret_access_key=MOTO["password"]
    )
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return sorted({key.split("/")[1] for key in keys if not key.endswith("/")})  # not pyarrow's folders


@pytest.mark.timeout(1500)
def test_a_backup_restores_onto_a_fresh_stack_with_history_connections_roles_and_datasets(
    drill: Drill, s3_endpoint: str
) -> None:
    admin, ds, home = drill.clients["admin"], drill.clients["data-scientist"], drill.stack.home
    assert admin.http.post("/connections", json=backup_connection(s3_endpoint)).status_code == 201
    role = admin.http.post(
        f"{drill.stack.api}/auth/fab/v1/roles", json={"name": "drill-auditor", "actions": []}
    )
    assert role.status_code in (200, 201), role.text
    assert admin.http.patch("/dags/platform_backup", json={"is_paused": False}).status_code == 200

    manifests = [backup_now(admin) for _ in range(KEEP + 1)]
    assert stored_backups(s3_endpoint) == [m["id"] for m in manifests[-KEEP:]]  # retention: the oldest went
    history = {dag_id: run_count(admin, dag_id) for dag_id in HISTORY}
    assert all(history.values()), history

    # A commit after the last backup: the restored catalog must still reach it (RPO: the last commit).
    new_transactions(home, 50_000, 3_000_000, "drill-after-backup")
    after_backup = ds.trigger("pipeline_transactions", {}).json()["dag_run_id"]
    assert ds.wait_for("pipeline_transactions", after_backup, 300) == "success"
    wait_until("pipeline_transactions idle", 120, lambda: ds.idle("pipeline_transactions"))

    # Destroy: every Airflow process, and the database server.
    local = json.loads((home / "local-secrets.json").read_text())
    os.killpg(drill.stack.proc.pid, signal.SIGINT)
    drill.stack.proc.wait(timeout=90)
    drill.database.stop()

    with postgres_server() as fresh:
        iceberg = json.dumps(postgres_iceberg_connection(fresh.database_url("iceberg"), home / "warehouse"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": fresh.url,
            "AIRFLOW__CORE__FERNET_KEY": local["fernet_key"],
            "AIRFLOW_CONN_ICEBERG_DEFAULT": iceberg,
            "AIRFLOW_CONN_PLATFORM_BACKUP": json.dumps(
                {
                    "conn_type": "aws",
                    **MOTO,
                    "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
                }
            ),
        }
        started = time.monotonic()
        restore = subprocess.run(  # docs/reliability.md's restore block, verbatim
            ["bash", "-c", doc_block("restore")],
            cwd=ROOT,
            env=env | {"BACKUPS": f"s3://{BUCKET}/platform"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert restore.returncode == 0, restore.stderr
        report = restore.stdout[restore.stdout.index("\n{\n") :]  # after Airflow's own log lines
        restored = json.loads(report)
        assert restored["id"] == manifests[-1]["id"]
        assert list(restored["rolled_forward"]) == ["base.transactions"]  # the commit after the backup
        restore_seconds = time.monotonic() - started

        stack = launch(
            home,
            free_port(),
            free_port(),
            free_port(),
            {
                "BASE_DEV_EXECUTOR": "celery",
                "BASE_DEV_DATABASE_URL": fresh.url,
                "BASE_DEV_ICEBERG_URL": fresh.database_url("iceberg"),
                "BASE_DEV_BROKER_URL": f"redis://127.0.0.1:{drill.broker_port}/0",
                "ARGOCD_SIM_SCENARIO": "drills.yaml",
                **DRILL_TIMINGS,
            },
        )
        with running(stack, seconds=300):
            ready_seconds = time.monotonic() - started
            print(
                f"\nrestore: platformctl restore {restore_seconds:.1f} s, the stack serving "
                f"{ready_seconds:.1f} s "
                f"after the restore began (RTO target {RTO_TARGET_SECONDS} s: "
                f"{ready_seconds / RTO_TARGET_SECONDS:.2%} of it)"
            )
            check_restored(role_clients(stack), history, stack.api, home)


def check_restored(clients: dict[str, Client], history: dict[str, int], api: str, home: Path) -> None:
    admin, ds = clients["admin"], clients["data-scientist"]
    assert {dag_id: run_count(admin, dag_id) for dag_id in HISTORY} == history
    connection = admin.http.get("/connections/platform_backup")
    assert connection.status_code == 200 and json.loads(connection.json()["extra"])["keep"] == KEEP
    roles = admin.http.get(f"{api}/auth/fab/v1/roles", params={"limit": 100}).json()["roles"]
    assert "drill-auditor" in {r["name"] for r in roles}
    # The restored connection's secret decrypts: a backup through it works on the new stack. It
    # waits behind the backup run that was in flight when the dump was taken, which the new
    # stack fails as a zombie (no worker heartbeats it) and retries after a minute.
    manifest = backup_now(admin, seconds=600)
    assert set(manifest["databases"]) == {"metadata", "iceberg"}
    # The datasets: a new run skips everything committed, the commit after the backup included.
    assert committed_rows(ds, ds.start("pipeline_transactions", {})) == 0
    rows = new_transactions(home, 20_000, 4_000_000, "drill-after-restore")
    assert committed_rows(ds, ds.trigger("pipeline_transactions", {}).json()["dag_run_id"]) == rows


def committed_rows(client: Client, run_id: str) -> int:
    """The rows a run of pipeline_transactions read (0 when it found nothing new)."""
    assert client.wait_for("pipeline_transactions", run_id, 300) == "success"
    path = f"/dags/pipeline_transactions/dagRuns/{run_id}/taskInstances/commit/xcomEntries/return_value"
    answer = client.http.get(path)
    return int(answer.json()["value"]["rows_in"]) if answer.status_code == 200 else 0

"""Who may release a batch the circuit breaker holds, and who may scrape /metrics, over REST on a
real stack (api-server, scheduler, dag-processor; the FAB auth manager with config/roles.yaml)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from scripts.dev_stack import Launched, launch, running
from tests.conftest import free_port
from tests.e2e.rest_client import Client, role_clients

pytestmark = pytest.mark.e2e
SCRAPE_TOKEN = secrets.token_urlsafe(32)  # this module's; the stack knows only its SHA-256
DISCARD = {"dataset": "transactions", "action": "discard", "reason": "checking who may release"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    base = tmp_path_factory.mktemp("release")
    digest = hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest()
    launched = launch(
        base / "home",
        free_port(),
        free_port(),
        free_port(),
        {"AIRFLOW_VAR_BASE_METRICS_SCRAPE_SHA256": digest},
    )
    with running(launched, seconds=420):
        yield launched


def resolve_log(admin: Client, run_id: str, attempt: int = 1) -> str:
    answer = admin.http.get(
        f"/dags/pipeline_control/dagRuns/{run_id}/taskInstances/resolve/logs/{attempt}",
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    return answer.text


@pytest.mark.timeout(900)
def test_only_a_releasing_role_may_trigger_pipeline_control_and_a_cleared_run_is_refused(
    stack: Launched,
) -> None:
    clients = role_clients(stack)
    local = json.loads((stack.home / "local-secrets.json").read_text())
    clients["pipeline-breaker"] = Client(stack, "breaker", local["breaker_password"])
    admin = clients["admin"]
    assert admin.http.patch("/dags/pipeline_control", json={"is_paused": False}).status_code == 200
    for role in ("data-scientist", "pipeline-breaker", "developer"):
        answer = clients[role].trigger("pipeline_control", DISCARD)
        assert answer.status_code == 403, (role, answer.status_code, answer.text)
        assert clients[role].http.patch("/dags/pipeline_control", json={"is_paused": True}).status_code == 403
        assert clients[role].http.get("/dags/pipeline_control").status_code == 200  # they still see it

    for role in ("ops", "admin"):
        answer = clients[role].trigger("pipeline_control", DISCARD)
        assert answer.status_code == 200, (role, answer.text)
        run_id = answer.json()["dag_run_id"]
        assert answer.json()["triggering_user_name"] == ("admin" if role == "admin" else "ops")
        state = admin.wait_for("pipeline_control", run_id, 300)
        log = resolve_log(admin, run_id)  # past the check of who triggered it, to the breaker
        assert "may not publish or discard" not in log, log
        assert state == "success" or "nothing to resolve" in log or "no audit is waiting" in log, log

    # the admin's run cleared: it would act again as its first trigger's user, so it is refused
    answer = admin.http.post(f"/dags/pipeline_control/dagRuns/{run_id}/clear", json={"dry_run": False})
    assert answer.status_code == 200, answer.text
    admin.wait_for_task("pipeline_control", run_id, "resolve", {"failed"}, 300)
    log = resolve_log(admin, run_id, attempt=2)
    assert "a cleared pipeline_control run is refused" in log, log


def test_prometheus_scrapes_with_its_token_and_an_airflow_token_still_works_for_people(
    stack: Launched,
) -> None:
    metrics = f"{stack.api}/base-platform/metrics"
    scraped = httpx.get(metrics, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=60)
    assert scraped.status_code == 200, scraped.text
    assert "base_app_health" in scraped.text
    assert (
        httpx.get(metrics, headers={"Authorization": "Bearer " + SCRAPE_TOKEN[:-2]}, timeout=60).status_code
        == 401
    )
    assert httpx.get(metrics, timeout=60).status_code == 401
    admin = role_clients(stack)["admin"]
    person = httpx.get(metrics, headers=dict(admin.http.headers), timeout=60)
    assert person.status_code == 200 and "base_app_health" in person.text
    token = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}  # the scrape token is no Airflow token
    assert httpx.get(f"{stack.api}/api/v2/dags", headers=token, timeout=60).status_code in (401, 403)

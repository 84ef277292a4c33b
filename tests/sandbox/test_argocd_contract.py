"""The Argo CD simulator's answers validate against argocd-swagger.json (made strict)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.contracts import assert_valid
from tests.unit.argocd.test_hooks import APP

pytestmark = pytest.mark.contract

STATES = {
    "defaults": {"sync_seconds": 0.4, "healthy_after_seconds": 0.8},
    "apps": {
        "degraded": {"outcome": "Degraded"},
        "failing": {"outcome": "SyncFailed"},
        "slow": {"sync_seconds": 30, "delete_seconds": 30},
    },
    "existing": {"old": {"revision": "v1"}},
}


def _named(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": APP["spec"]}


@pytest.mark.slow
def test_application_in_every_state_matches_the_contract(contracts_dir: Path, start_simulator) -> None:
    sim = start_simulator(STATES)
    with sim.client() as client:
        fresh = client.post("/api/v1/applications", params={"upsert": "true"}, json=_named("fresh")).json()
        assert_valid(contracts_dir, "v1alpha1Application", fresh)
        for name in ("web", "degraded", "failing", "slow", "dry"):
            client.post("/api/v1/applications", params={"upsert": "true"}, json=_named(name))
            body = {"revision": "main", "dryRun": name == "dry"}
            running = client.post(f"/api/v1/applications/{name}/sync", json=body).json()
            assert_valid(contracts_dir, "v1alpha1Application", running)
        time.sleep(1.2)
        client.delete("/api/v1/applications/slow", headers={"Content-Type": "application/json"})
        listed = client.get("/api/v1/applications").json()
        assert_valid(contracts_dir, "v1alpha1ApplicationList", listed)
        assert {a["metadata"]["name"] for a in listed["items"]} == {
            "fresh",
            "web",
            "degraded",
            "failing",
            "slow",
            "dry",
            "old",
        }
        for app in listed["items"]:
            name = app["metadata"]["name"]
            assert_valid(
                contracts_dir,
                "v1alpha1ApplicationTree",
                client.get(f"/api/v1/applications/{name}/resource-tree").json(),
            )
            assert_valid(
                contracts_dir,
                "applicationManagedResourcesResponse",
                client.get(f"/api/v1/applications/{name}/managed-resources").json(),
            )
            assert_valid(
                contracts_dir, "eventsEventList", client.get(f"/api/v1/applications/{name}/events").json()
            )
        states = {a["metadata"]["name"]: a["status"]["health"]["status"] for a in listed["items"]}
        assert states["degraded"] == "Degraded" and states["web"] == "Healthy"
        assert next(a for a in listed["items"] if a["metadata"]["name"] == "slow")["metadata"][
            "deletionTimestamp"
        ]


def test_other_answers_match_the_contract(contracts_dir: Path, start_simulator) -> None:
    sim = start_simulator(STATES)
    with sim.client() as client:
        assert_valid(contracts_dir, "versionVersionMessage", client.get("/api/version").json())
        session = client.post("/api/v1/session", json={"username": "admin", "password": "sandbox-password"})
        assert_valid(contracts_dir, "sessionSessionResponse", session.json())
        project = {
            "project": {"metadata": {"name": "p"}, "spec": {"sourceRepos": ["https://g/x.git"]}},
            "upsert": True,
        }
        assert_valid(
            contracts_dir, "v1alpha1AppProject", client.post("/api/v1/projects", json=project).json()
        )
        assert_valid(contracts_dir, "v1alpha1AppProjectList", client.get("/api/v1/projects").json())


def test_errors_use_the_runtime_error_shape(contracts_dir: Path, start_simulator) -> None:
    sim = start_simulator({"defaults": {"sync_seconds": 30}})
    with sim.client() as client:
        client.post("/api/v1/applications", params={"upsert": "true"}, json=_named("web"))
        client.post("/api/v1/applications/web/sync", json={})
        answers = {
            400: client.post("/api/v1/applications/web/sync", json={}),
            401: client.get("/api/v1/applications", headers={"Authorization": "Bearer nope"}),
            403: client.get("/api/v1/applications/ghost"),
            415: client.post(
                "/api/v1/applications/web/sync", content=b"{}", headers={"Content-Type": "text/plain"}
            ),
        }
        sim.inject("/api/v1/applications", 400, message="another operation is already in progress")
        for status, response in answers.items():
            assert response.status_code == status, response.text
            assert_valid(contracts_dir, "runtimeError", response.json())
            assert response.json()["message"]
        assert answers[400].json()["message"] == "another operation is already in progress"
        assert answers[403].json()["code"] == 7


def test_injected_5xx_rate_is_applied(start_simulator) -> None:
    sim = start_simulator({"error_rate_5xx": 0.5, "seed": 3})
    with sim.client() as client:
        codes = [client.get("/api/v1/applications").status_code for _ in range(40)]
    assert 5 < codes.count(503) < 35 and codes.count(200) == 40 - codes.count(503)


@pytest.mark.slow
def test_stale_reads_answer_the_previous_state(start_simulator) -> None:
    sim = start_simulator(
        {"defaults": {"sync_seconds": 0.2, "stale_read_seconds": 1.0}, "existing": {"web": {}}}
    )
    with sim.client() as client:
        before = client.get("/api/v1/applications/web").json()
        client.post("/api/v1/applications/web/sync", json={"revision": "v2"})
        time.sleep(0.5)
        assert client.get("/api/v1/applications/web").json()["status"] == before["status"]
        time.sleep(0.7)
        after = client.get("/api/v1/applications/web").json()
        assert after["status"]["operationState"]["startedAt"]
        assert after["status"]["sync"]["revision"] != before["status"]["sync"]["revision"]


def test_accounts_match_the_contract_and_a_disabled_one_cannot_log_in(
    contracts_dir: Path, start_simulator
) -> None:
    sim = start_simulator({"users": {"admin": "pw", "ci": "pw2"}, "disabled_accounts": ["admin"]})
    with sim.client() as client:
        accounts = client.get("/api/v1/account").json()
        assert_valid(contracts_dir, "accountAccountsList", accounts)
        assert {a["name"]: a["enabled"] for a in accounts["items"]} == {"admin": False, "ci": True}
        assert_valid(contracts_dir, "accountAccount", client.get("/api/v1/account/ci").json())
        refused = client.post("/api/v1/session", json={"username": "admin", "password": "pw"})
        assert refused.status_code == 401 and "disabled" in refused.json()["message"]


def test_scheduled_drift_shows_in_managed_resources_until_a_sync_heals_it(
    contracts_dir: Path, start_simulator
) -> None:
    drift = {"kind": "Deployment", "live": {"spec": {"replicas": 5}}, "target": {"spec": {"replicas": 2}}}
    sim = start_simulator(
        {
            "defaults": {"sync_seconds": 0.2, "healthy_after_seconds": 0.3},
            "existing": {"web": {}},
            "apps": {"web": {"drift": [drift]}},
        }
    )
    with sim.client() as client:
        app = client.get("/api/v1/applications/web").json()
        assert (
            app["status"]["sync"]["status"] == "OutOfSync" and app["status"]["health"]["status"] == "Healthy"
        )
        diff = client.get("/api/v1/applications/web/managed-resources").json()
        assert_valid(contracts_dir, "applicationManagedResourcesResponse", diff)
        modified = [i for i in diff["items"] if i["modified"]]
        assert [i["kind"] for i in modified] == ["Deployment"]
        assert json.loads(modified[0]["liveState"])["spec"] == {"replicas": 5}
        assert json.loads(modified[0]["targetState"])["spec"] == {"replicas": 2}
        client.post("/api/v1/applications/web/sync", json={})
        time.sleep(0.5)
        healed = client.get("/api/v1/applications/web").json()
        assert healed["status"]["sync"]["status"] == "Synced"
        items = client.get("/api/v1/applications/web/managed-resources").json()["items"]
        assert not any(i["modified"] for i in items)


def test_drift_injected_at_run_time(start_simulator) -> None:
    sim = start_simulator({"existing": {"web": {}}})
    body = {
        "app": "web",
        "kind": "Service",
        "live": {"spec": {"type": "NodePort"}},
        "target": {"spec": {"type": "ClusterIP"}},
    }
    httpx.post(f"{sim.url}/sandbox/drift", json=body).raise_for_status()
    with sim.client() as client:
        statuses = client.get("/api/v1/applications/web").json()["status"]["resources"]
    assert {r["kind"]: r["status"] for r in statuses} == {"Deployment": "Synced", "Service": "OutOfSync"}


def test_a_locked_default_project_allows_nothing(start_simulator) -> None:
    sim = start_simulator({"lock_default_project": True})
    with sim.client() as client:
        default = client.get("/api/v1/projects").json()["items"][0]
    assert default["metadata"]["name"] == "default"
    assert default["spec"] == {"sourceRepos": [], "destinations": []}

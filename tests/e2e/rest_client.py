"""A role's view of Airflow's REST API, for the tests that drive a running stack over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from scripts.dev_stack import Launched

ROLE_USERS = (("admin", "admin"), ("ops", "ops"), ("developer", "dev"), ("data-scientist", "ds"))


class Client:
    """One role's view of the REST API."""

    def __init__(self, stack: Launched, username: str, password: str) -> None:
        answer = httpx.post(f"{stack.api}/auth/token", json={"username": username, "password": password})
        assert answer.status_code in (200, 201), (username, answer.status_code, answer.text)
        self.http = httpx.Client(
            base_url=f"{stack.api}/api/v2",
            headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
            timeout=30,
        )

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})

    def start(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause the DAG and trigger a run as this role; the run's id."""
        assert self.http.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        answer = self.trigger(dag_id, conf)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["dag_run_id"])

    def idle(self, dag_id: str) -> bool:
        """No run of the DAG is queued or running."""
        runs = self.http.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
        return all(run["state"] in ("success", "failed") for run in runs)

    def unpause_and_settle(self, dag_id: str, seconds: float = 240) -> None:
        """Unpause the DAG and wait for the run that unpausing may start (its latest scheduled
        interval) to end. Two schedulers can start that run and a triggered one at once, whatever
        ``max_active_runs`` says (apache/airflow#45388)."""
        assert self.http.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        deadline = time.monotonic() + seconds
        time.sleep(5)  # a scheduler loop, for the scheduled run to be created
        while not self.idle(dag_id):
            assert time.monotonic() < deadline, f"{dag_id} still has a run after {seconds:.0f} s"
            time.sleep(2)

    def wait_for(self, dag_id: str, run_id: str, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = str(self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise AssertionError(f"{dag_id} {run_id} did not finish within {seconds:.0f} s")

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        answer = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        state: str | None = answer.json().get("state")
        return state

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, states: set[str], seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.task_state(dag_id, run_id, task_id)
            if state in states:
                return state
            time.sleep(1)
        raise AssertionError(f"{task_id} of {run_id} not in {states} within {seconds:.0f} s")

    def answer_approval(self, run_id: str, option: str) -> httpx.Response:
        path = f"/dags/platform_deploy/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
        return self.http.patch(path, json={"chosen_options": [option], "params_input": {}})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        instances: list[dict[str, Any]] = answer.json()["task_instances"]
        return instances


def role_clients(stack: Launched) -> dict[str, Client]:
    """One client per role of config/roles.yaml, logged in with the stack's generated passwords."""
    local = json.loads((stack.home / "local-secrets.json").read_text())
    return {role: Client(stack, user, local[f"{user}_password"]) for role, user in ROLE_USERS}

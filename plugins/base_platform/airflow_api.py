"""Airflow's own REST API, for what a task cannot do through the Task SDK: pause a DAG.

A task has no database access in Airflow 3, and the Execution API cannot pause a DAG, so a
pipeline whose circuit breaker opens pauses itself the way an operator would: through the
public API, as the user of the HTTP connection ``airflow_api`` (host: the api-server's URL;
login and password: a service user of config/roles.yaml whose role may edit ``pipeline_*``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
CONN_ID = "airflow_api"
TIMEOUT = 30.0


class AirflowApiError(RuntimeError):
    """The API refused the request (not a connection problem, which httpx raises)."""


def set_paused(dag_id: str, paused: bool, conn_id: str = CONN_ID) -> bool:
    """Pause or resume ``dag_id``; False (and a warning) where no ``airflow_api`` connection exists."""
    import httpx
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.warning("no connection %r: %s stays %s", conn_id, dag_id, "unpaused" if paused else "paused")
        return False
    base = (conn.host or "").rstrip("/")
    if conn.port and base.count(":") < 2:
        base = f"{base}:{conn.port}"
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        token = client.post("/auth/token", json={"username": conn.login, "password": conn.password})
        if token.status_code not in (200, 201):
            raise AirflowApiError(f"{conn_id}: /auth/token answered {token.status_code}")
        answer = client.patch(
            f"/api/v2/dags/{dag_id}",
            params={"update_mask": "is_paused"},
            json={"is_paused": paused},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
    if answer.status_code != 200:
        said = f"{answer.status_code}: {answer.text[:300]}"
        raise AirflowApiError(f"{conn_id}: pausing {dag_id} answered {said}")
    log.info("%s %s through %s", "paused" if paused else "resumed", dag_id, conn_id)
    return True

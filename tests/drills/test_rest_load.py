"""Load on the REST doors CI uses: core deployed, then 50 platformctl clients at once, each
triggering platform_validate (scope core) and polling its run to the end, on the Celery stack,
127.0.0.1 only.

The clients are platformctl's own (``Airflow`` and ``run``), in threads; every request's time to
its whole answer is recorded. Runs before the kill drills, on the whole topology.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from scripts import platformctl
from tests.drills.conftest import Drill

pytestmark = pytest.mark.drill
CLIENTS = 50


class TimedAirflow(platformctl.Airflow):
    """platformctl's client, timing each request and keeping its status and run ids."""

    def __init__(self, url: str, username: str, password: str, record: list[tuple[float, int]]) -> None:
        self.record, self.lock = record, threading.Lock()
        self.run_ids: list[str] = []
        hooks = {"request": [self._sent], "response": [self._answered]}
        super().__init__(url, username, password, event_hooks=hooks)

    def _sent(self, request: httpx.Request) -> None:
        request.extensions["started"] = time.monotonic()

    def _answered(self, response: httpx.Response) -> None:
        response.read()
        with self.lock:
            self.record.append(
                (time.monotonic() - response.request.extensions["started"], response.status_code)
            )

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run_id = super().trigger(dag_id, conf)
        self.run_ids.append(run_id)
        return run_id


@pytest.mark.timeout(1200)
def test_fifty_platformctl_clients_trigger_and_poll_without_a_5xx(drill: Drill) -> None:
    password = json.loads((drill.stack.home / "local-secrets.json").read_text())["admin_password"]
    record: list[tuple[float, int]] = []
    args = platformctl.parser().parse_args(
        ["validate", "--env", "dev", "--scope", "core", "--wait", "--timeout", "15m"]
    )

    def one_client(_: int) -> tuple[int | str, list[str]]:
        """platformctl's exit code, or what stopped it (as its main would print), and its runs."""
        try:
            airflow = TimedAirflow(drill.stack.api, "admin", password, record)
            return platformctl.run(args, airflow), airflow.run_ids
        except (platformctl.ApiError, httpx.HTTPError) as exc:
            return f"{type(exc).__name__}: {exc}", []

    deploy = platformctl.parser().parse_args(
        ["deploy", "--env", "dev", "--waves", "core", "--wait", "--timeout", "10m"]
    )
    with contextlib.redirect_stdout(
        io.StringIO()
    ):  # CI deploys core first, so there is something to validate
        assert (
            platformctl.run(deploy, platformctl.Airflow(drill.stack.api, "admin", password)) == platformctl.OK
        )

    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(one_client, range(CLIENTS)))
    last_end = time.monotonic() - started

    codes = [code for code, _ in outcomes]
    assert all(code in (platformctl.OK, platformctl.FAILED) for code in codes), codes  # none timed out
    run_ids = [run_id for _, ids in outcomes for run_id in ids]
    assert len(set(run_ids)) == CLIENTS  # every trigger got a run of its own
    admin = drill.clients["admin"]
    states = [
        admin.http.get(f"/dags/platform_validate/dagRuns/{run_id}").json()["state"] for run_id in run_ids
    ]
    assert all(state in ("success", "failed") for state in states), states
    errors = [code for _, code in record if code >= 500]
    latencies = sorted(seconds for seconds, _ in record)
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"\nREST load: {CLIENTS} platformctl clients, {len(record)} requests, {len(errors)} 5xx; "
        f"p50 {cuts[49] * 1000:.0f} ms, p95 {cuts[94] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms; the last run ended {last_end:.0f} s after the first trigger; "
        f"verdicts: {codes.count(platformctl.OK)} ok, {codes.count(platformctl.FAILED)} failed"
    )
    assert errors == []
    assert codes.count(platformctl.OK) == CLIENTS  # and every verdict: core is deployed and healthy

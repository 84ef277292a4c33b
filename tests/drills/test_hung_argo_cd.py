"""Argo CD hung while six clients ask the platform page and /metrics: Airflow's own API, served by
the same api-server, must not notice. A drill, not an e2e test: it measures latencies under a
second, so nothing else may run beside it on the machine's two cores (it failed at 1.13 s beside
another xdist worker's pipeline tests).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import httpx
import pytest

from scripts.dev_stack import Launched
from tests.drills.conftest import Drill
from tests.e2e.rest_client import Client

pytestmark = pytest.mark.drill

HUNG_SECONDS = 16  # past the page cache's 10 s, so refreshes are due and hang on Argo CD


def _platform(stack: Launched, token: dict[str, str]) -> httpx.Response:
    return httpx.get(
        f"{stack.api}/base-platform/api/platform", params={"environment": "dev"}, headers=token, timeout=120
    )


def _until_platform(stack: Launched, token: dict[str, str], fresh: bool) -> dict[str, Any]:
    """The page's answer once it is 200 without a problem (and ``fresh``: not stale), within 60 s."""
    deadline = time.monotonic() + 60
    while True:
        answer = _platform(stack, token)
        body: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
        if body and body["problem"] is None and not (fresh and body["stale"]):
            return body
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)


def _airflow_latencies_until(stack: Launched, admin: Client, until: float) -> dict[str, list[float]]:
    """Airflow's own health and DAG list, over and over: the seconds each took."""
    seconds: dict[str, list[float]] = {"health": [], "dags": []}
    while time.monotonic() < until:
        for name, call in (
            ("health", lambda: httpx.get(f"{stack.api}/api/v2/monitor/health", timeout=60)),
            ("dags", lambda: admin.http.get("/dags", params={"limit": 5})),
        ):
            begun = time.monotonic()
            answer = call()
            seconds[name].append(round(time.monotonic() - begun, 3))
            assert answer.status_code == 200, (name, answer.text)
        time.sleep(0.2)
    return seconds


class PageAnswer(NamedTuple):
    asked_at: float  # time.monotonic(), one clock for every process of the machine
    seconds: float
    path: str
    status: int
    retry_after: str | None
    stale: bool | None


def _ask_page(api: str, token: dict[str, str], path: str, until: float) -> list[PageAnswer]:
    """One client of the page, in a process of its own (the test's own threads must not slow
    the latencies it measures): a request a second until ``until``."""
    answers = []
    while time.monotonic() < until:
        begun = time.monotonic()
        answer = httpx.get(
            f"{api}/base-platform{path}", params={"environment": "dev"}, headers=token, timeout=120
        )
        stale = answer.json()["stale"] if answer.status_code == 200 and path == "/api/platform" else None
        answers.append(
            PageAnswer(
                begun,
                time.monotonic() - begun,
                path,
                answer.status_code,
                answer.headers.get("Retry-After"),
                stale,
            )
        )
        time.sleep(1.0)  # a browser or a scraper, not a load test: the box has two cores
    return answers


@pytest.mark.timeout(300)
def test_a_hung_argo_cd_never_slows_airflows_own_api(drill: Drill) -> None:
    """The Argo CD simulator stopped (SIGSTOP: connections accepted, never answered) while six
    clients keep asking the page and /metrics: Airflow's health and DAG list answer in under a
    second throughout, the page answers stale or 503 in seconds, and recovers after SIGCONT."""
    from concurrent.futures import ProcessPoolExecutor

    stack, admin = drill.stack, drill.clients["admin"]
    token = {"Authorization": admin.http.headers["Authorization"]}
    for _ in range(10):  # a value in the cache of each api-server worker, most likely
        _until_platform(stack, token, fresh=False)
    before = _airflow_latencies_until(stack, admin, time.monotonic() + 5)  # for the failure message

    with ProcessPoolExecutor(6) as pool:
        drill.pause("argocd-sim", True)
        try:
            stopped_at = time.monotonic()
            stop_at = stopped_at + HUNG_SECONDS
            paths = ["/metrics" if number % 2 else "/api/platform" for number in range(6)]
            asking = [pool.submit(_ask_page, stack.api, token, path, stop_at) for path in paths]
            hung = _airflow_latencies_until(stack, admin, stop_at)
            answers = [answer for done in asking for answer in done.result()]
        finally:
            drill.pause("argocd-sim", False)

    for name, seconds in hung.items():
        assert max(seconds) < 1.0, f"{name} with Argo CD hung: {seconds}; before: {before[name]}"
    assert any(answer.status == 200 for answer in answers), "no page request was answered"
    for answer in answers:
        # a stale value at once, or a 503 after the first read's short wait: never Argo CD's pace
        assert answer.seconds < 10 and answer.status in (200, 503), answer
        if answer.status == 503:
            assert answer.retry_after and answer.retry_after.isdigit(), answer
        elif answer.path == "/api/platform" and answer.asked_at > stopped_at + 11:
            assert answer.stale is True, answer  # older than the cache's 10 s

    recovered = _until_platform(stack, token, fresh=True)
    assert {c["name"] for c in recovered["components"]} >= {"argocd", "vault"}

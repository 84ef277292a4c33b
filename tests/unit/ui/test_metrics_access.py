"""Who may scrape /metrics: Prometheus with its long-lived scrape token, or an Airflow user with a
token that has not expired. Tokens are minted by Airflow's own signer and checked by the real app.
And what /metrics and the page's routes answer when a source behind them fails or hangs: a 503,
and never a thread of the pool Airflow's own sync routes run in."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from base_platform.ui import state
from base_platform.ui.access import SCRAPE_HASHES_VARIABLE, is_scrape_token
from tests.scenarios import deployed_platform

SCRAPE_ENV = f"AIRFLOW_VAR_{SCRAPE_HASHES_VARIABLE.upper()}"
SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def simulator(start_simulator: Callable[..., Any]) -> Any:
    return start_simulator(deployed_platform())


@pytest.fixture
def client(
    airflow_db: None, iceberg: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    from airflow.api_fastapi import app as airflow_app
    from airflow.configuration import conf

    from base_platform.ui.app import create_app

    monkeypatch.setattr(state, "CACHE", state.TTLCache(state.CACHE_SECONDS))
    # Airflow's simple auth manager, whichever one other tests of the session left configured
    # (tests/unit/ui/conftest.py's FAB), and theirs back afterwards
    configured, instance = conf.get("core", "auth_manager"), airflow_app._AuthManagerState.instance
    conf.set("core", "auth_manager", SIMPLE)
    airflow_app._AuthManagerState.instance = None
    airflow_app.init_auth_manager()
    try:
        with TestClient(create_app()) as test_client:
            yield test_client
    finally:
        conf.set("core", "auth_manager", configured)
        airflow_app._AuthManagerState.instance = instance


def airflow_token(valid_for: int) -> str:
    """An Airflow token of the admin, signed by Airflow's own signer; negative: expired that long ago."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="admin", role="admin")
    return str(get_auth_manager().generate_jwt(user, expiration_time_in_seconds=valid_for))


def scrape(client: TestClient, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/metrics", headers=headers)


def test_the_scrape_token_reads_metrics_and_either_of_two_hashes_serves_a_rotation(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    monkeypatch.setattr(state, "CACHE", state.TTLCache(0.5))  # the digests' 10 s, shortened
    monkeypatch.setenv(SCRAPE_ENV, f"{sha256(old)},\n {sha256(new).upper()}")
    for token in (old, new):
        answer = scrape(client, token)
        assert answer.status_code == 200, answer.text
        assert "base_app_health{" in answer.text
    monkeypatch.setenv(SCRAPE_ENV, sha256(new))  # the rotation is over: the old token is out
    assert scrape(client, old).status_code == 200  # read less than a cache period ago
    time.sleep(0.6)  # the period past: the very next scrape reads the digests again
    assert scrape(client, old).status_code == 401 and scrape(client, new).status_code == 200


def test_bearers_that_only_look_like_scrape_tokens_cost_the_secrets_backend_one_read(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.variable import Variable

    reads = []
    real = Variable.get_variable_from_secrets

    def counted(key: str) -> Any:
        reads.append(key)
        return real(key=key)

    monkeypatch.setattr(Variable, "get_variable_from_secrets", staticmethod(counted))
    monkeypatch.setenv(SCRAPE_ENV, sha256(secrets.token_urlsafe(32)))
    for _ in range(30):
        assert scrape(client, secrets.token_urlsafe(32)).status_code == 401
    assert reads == [SCRAPE_HASHES_VARIABLE]


def test_a_wrong_missing_or_expired_credential_is_401_and_a_live_airflow_token_still_works(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_urlsafe(32)
    monkeypatch.setenv(SCRAPE_ENV, sha256(token))
    for wrong in (None, "", token[:-1], sha256(token), token + "x", secrets.token_urlsafe(32)):
        assert scrape(client, wrong).status_code == 401, wrong
    expired = airflow_token(-3600)  # Airflow's own signer, an hour past its expiry
    assert scrape(client, expired).status_code == 401
    assert client.get("/metrics", cookies={"_token": expired}).status_code == 401
    forged = expired.rsplit(".", 1)[0] + "." + "A" * 86  # a token whose signature is not Airflow's
    assert scrape(client, forged).status_code == 401
    person = scrape(client, airflow_token(600))
    assert person.status_code == 200 and "base_app_health{" in person.text


def test_the_scrape_token_opens_metrics_only_and_nothing_when_no_hash_is_configured(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_urlsafe(32)
    monkeypatch.setenv(SCRAPE_ENV, sha256(token))
    for path in ("/api/tabs", "/api/platform", "/api/pipelines"):
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code in (401, 403), path
    monkeypatch.setenv(SCRAPE_ENV, "not a digest")
    assert scrape(client, token).status_code == 401
    assert not is_scrape_token(token, []) and is_scrape_token(token, [sha256(token)])
    assert not is_scrape_token("short", [sha256("short")]) and not is_scrape_token("", [sha256("")])


def test_a_catalog_that_cannot_be_read_is_a_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Iceberg's catalog unreachable as the api-server starts: a 503 to retry, never a 500."""
    monkeypatch.delenv("AIRFLOW_CONN_ICEBERG_DEFAULT", raising=False)  # no catalog connection at all
    headers = {"Authorization": f"Bearer {airflow_token(600)}"}
    for path in ("/api/pipelines", "/api/pipelines/overview", "/metrics"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert answer.headers["Retry-After"].isdigit()


@pytest.mark.slow
def test_requests_held_by_a_hung_argo_cd_take_no_thread_from_airflows_pool(
    client: TestClient, simulator: Any
) -> None:
    """Twice as many page and /metrics requests as the plugin has threads, with Argo CD stopped
    (SIGSTOP) and nothing cached: each waits its turn for a plugin thread and gets a 503 (or, after
    the read's deadline, the page naming the problem), while AnyIO's default pool (where Airflow's
    sync routes run) lends none of its threads."""
    import anyio.to_thread

    from base_platform.ui.threads import METRICS_THREADS, PLUGIN_THREADS, plugin_threads

    headers = {"Authorization": f"Bearer {airflow_token(600)}"}
    paths = ["/metrics", "/api/platform"] * PLUGIN_THREADS
    portal = client.portal
    assert portal is not None

    def borrowed() -> tuple[float, float]:  # called in the app's event loop
        return (
            anyio.to_thread.current_default_thread_limiter().borrowed_tokens,
            plugin_threads().borrowed_tokens + plugin_threads("metrics").borrowed_tokens,
        )

    os.kill(simulator.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(len(paths)) as pool:
            asked = [pool.submit(client.get, path, headers=headers) for path in paths]
            seen = []
            while not all(request.done() for request in asked):
                seen.append(portal.call(borrowed))
                time.sleep(0.05)
            answers = [request.result() for request in asked]
    finally:
        os.kill(simulator.proc.pid, signal.SIGCONT)
    # the hang held every page thread and both of /metrics' own
    assert max(plugin for _, plugin in seen) == PLUGIN_THREADS + METRICS_THREADS
    assert max(default for default, _ in seen) == 0, seen
    for path, answer in zip(paths, answers, strict=True):
        # a 503 to retry while the first read runs; once its 4 s deadline has passed, what failed
        if answer.status_code == 503:
            assert answer.headers["Retry-After"].isdigit(), answer.text
        else:
            assert answer.status_code == 200, answer.text
            assert path == "/metrics" or "Argo CD did not answer" in answer.json()["problem"]


@pytest.mark.slow
def test_a_request_that_finds_every_plugin_thread_held_past_the_wait_is_a_503_busy(
    client: TestClient, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argo CD stopped, nothing cached: the first requests hold every plugin thread for the first
    read's 2 s wait; the rest, waiting 0.5 s for a thread here, get a 503 saying so, not a queue."""
    from base_platform.ui import threads

    monkeypatch.setattr(threads, "THREAD_WAIT_SECONDS", 0.5)
    headers = {"Authorization": f"Bearer {airflow_token(600)}"}
    os.kill(simulator.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2 * threads.PLUGIN_THREADS) as pool:
            asked = [
                pool.submit(client.get, "/api/platform", headers=headers)
                for _ in range(2 * threads.PLUGIN_THREADS)
            ]
            time.sleep(0.2)  # every page thread taken: /metrics has threads of its own
            scrape = client.get("/metrics", headers=headers)
            answers = [request.result() for request in asked]
    finally:
        os.kill(simulator.proc.pid, signal.SIGCONT)
    assert "stayed busy" not in scrape.text and scrape.headers["Retry-After"], scrape.text
    busy = [answer for answer in answers if "stayed busy" in answer.text]
    assert len(busy) == threads.PLUGIN_THREADS, [answer.text for answer in answers]
    for answer in answers:
        assert answer.status_code in (200, 503) and (
            answer.status_code == 200 or answer.headers["Retry-After"]
        )

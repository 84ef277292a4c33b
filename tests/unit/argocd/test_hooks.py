"""The hooks over real HTTP against the Argo CD simulator."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.sdk import Connection

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDAsyncHook, ArgoCDHook, ConnectionSettings
from tests.conftest import FAST, free_port

APP: dict[str, Any] = {
    "metadata": {"name": "web"},
    "spec": {
        "project": "default",
        "source": {"repoURL": "https://git.example.com/x.git", "path": "web", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
    },
}


def hook(**kwargs: Any) -> ArgoCDHook:
    return ArgoCDHook(backoff_seconds=0.01, **kwargs)


def conn(**fields: Any) -> Connection:
    return Connection(conn_id="argocd_default", conn_type="argocd", **fields)


class TestConnectionSettings:
    def test_full_url_host_and_token(self) -> None:
        s = ConnectionSettings.from_connection(conn(host="https://argocd.example.com/", password="tok"))
        assert (s.base_url, s.token, s.username, s.verify_ssl) == (
            "https://argocd.example.com",
            "tok",
            None,
            True,
        )

    def test_bare_host_with_schema_and_port(self) -> None:
        s = ConnectionSettings.from_connection(conn(host="argocd.local", schema="http", port=8443))
        assert s.base_url == "http://argocd.local:8443"

    def test_login_means_password_is_a_password(self) -> None:
        s = ConnectionSettings.from_connection(conn(host="h", login="admin", password="pw"))
        assert (s.token, s.username, s.password) == (None, "admin", "pw")

    def test_extras_and_constructor_overrides(self) -> None:
        extra = {"verify_ssl": "false", "timeout": 7, "backoff_seconds": 0.25}
        c = conn(host="https://h", password="t", extra=json.dumps(extra))
        settings = ConnectionSettings.from_connection(c)
        assert (settings.verify_ssl, settings.timeout, settings.backoff_seconds) == (False, 7.0, 0.25)
        overridden = ConnectionSettings.from_connection(c, verify_ssl=True, timeout=3, backoff_seconds=2)
        assert (overridden.verify_ssl, overridden.timeout, overridden.backoff_seconds) == (True, 3, 2)
        assert ConnectionSettings.from_connection(conn(host="https://h")).backoff_seconds == 1.0

    def test_missing_host_is_a_clear_error(self) -> None:
        with pytest.raises(Exception, match="no host"):
            ConnectionSettings.from_connection(conn(password="t"))


def test_version_needs_no_token(start_simulator) -> None:
    start_simulator(FAST)
    assert hook().version()["Version"].startswith("v3.5.1")


def test_bad_token_raises_typed_401_with_server_message(start_simulator, monkeypatch) -> None:
    sim = start_simulator(FAST)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ARGOCD_DEFAULT",
        json.dumps({"conn_type": "argocd", "host": sim.url, "password": "wrong"}),
    )
    with pytest.raises(ArgoCDAPIError) as err:
        hook().list_applications()
    assert err.value.status_code == 401
    assert err.value.message == "no session information"


def test_login_and_password_get_a_session_token(start_simulator, monkeypatch) -> None:
    sim = start_simulator(FAST)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ARGOCD_DEFAULT",
        json.dumps(
            {"conn_type": "argocd", "host": sim.url, "login": "admin", "password": "sandbox-password"}
        ),
    )
    assert hook().list_applications()["items"] == []
    monkeypatch.setenv(
        "AIRFLOW_CONN_ARGOCD_DEFAULT",
        json.dumps({"conn_type": "argocd", "host": sim.url, "login": "admin", "password": "nope"}),
    )
    with pytest.raises(ArgoCDAPIError, match="Invalid username or password"):
        hook().list_applications()


@pytest.mark.slow
def test_application_lifecycle(start_simulator) -> None:
    start_simulator(FAST)
    h = hook()
    assert h.upsert_application(APP)["metadata"]["name"] == "web"
    assert h.application_exists("web") and not h.application_exists("ghost")
    synced = h.sync_application("web", revision="main", prune=True)
    assert synced["operation"]["sync"]["prune"] is True
    time.sleep(1.6)
    app = h.get_application("web", refresh="normal")
    assert (app["status"]["sync"]["status"], app["status"]["health"]["status"]) == ("Synced", "Healthy")
    assert [n["kind"] for n in h.resource_tree("web")["nodes"]][:2] == ["Deployment", "ReplicaSet"]
    assert {i["kind"] for i in h.managed_resources("web")["items"]} == {"Deployment", "Service"}
    assert h.events("web")["items"][0]["reason"] == "OperationCompleted"
    h.sync_application("web", revision="v2")
    time.sleep(1.6)
    assert h.rollback_application("web", history_id=1)["operation"]["sync"]["revision"]
    h.terminate_operation("web")
    with pytest.raises(ArgoCDAPIError, match="No operation is in progress") as err:
        time.sleep(0.1)
        h.terminate_operation("web")
    assert err.value.status_code == 400
    h.delete_application("web", cascade=True)
    assert not h.application_exists("web")


def test_find_application_tells_missing_from_forbidden(start_simulator) -> None:
    start_simulator(FAST)
    h = hook()
    assert h.find_application("ghost") is None  # 403 "permission denied", confirmed missing
    h.upsert_application(APP)
    found = h.find_application("web")
    assert found is not None and found["metadata"]["name"] == "web"
    # A 403 for an app that exists is a real refusal, not "missing".
    assert not h.is_missing(ArgoCDAPIError(403, "permission denied", "GET", "/x"), "web")


def test_unknown_app_is_403_not_retried(start_simulator) -> None:
    start_simulator(FAST)
    with pytest.raises(ArgoCDAPIError) as err:
        hook().get_application("ghost")
    assert err.value.status_code == 403 and "permission denied" in err.value.message


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(start_simulator, status: int) -> None:
    sim = start_simulator(FAST)
    sim.inject("/api/v1/applications", status, count=2)
    assert hook().list_applications()["items"] == []


def test_retries_give_up_with_the_status(start_simulator) -> None:
    sim = start_simulator(FAST)
    sim.inject("/api/v1/applications", 503, count=10)
    with pytest.raises(ArgoCDAPIError) as err:
        hook(max_attempts=3).list_applications()
    assert err.value.status_code == 503


def test_500_is_not_retried(start_simulator) -> None:
    sim = start_simulator(FAST)
    sim.inject("/api/v1/applications", 500, count=1)
    with pytest.raises(ArgoCDAPIError) as err:
        hook().list_applications()
    assert err.value.status_code == 500
    assert hook().list_applications()["items"] == []


@pytest.mark.slow
def test_sync_retries_while_another_operation_is_in_progress(start_simulator) -> None:
    start_simulator({"defaults": {"sync_seconds": 1.0}})
    h = ArgoCDHook(backoff_seconds=0.3, max_attempts=6)
    h.upsert_application(APP)
    h.sync_application("web")
    second = h.sync_application("web", revision="v2")  # the first operation is still running
    assert second["operation"]["sync"]["revision"]


def test_in_progress_is_not_retried_for_other_calls(start_simulator) -> None:
    sim = start_simulator(FAST)
    sim.inject(
        "/api/v1/applications/web", 400, method="DELETE", message="another operation is already in progress"
    )
    h = hook()
    h.upsert_application(APP)
    with pytest.raises(ArgoCDAPIError, match="already in progress"):
        h.delete_application("web")


def test_rollback_retries_while_another_operation_is_in_progress(start_simulator) -> None:
    sim = start_simulator(FAST)
    h = ArgoCDHook(backoff_seconds=0.1)
    h.upsert_application(APP)
    h.sync_application("web", revision="v1")
    sim.inject(
        "/api/v1/applications/web/rollback", 400, count=2, message="another operation is already in progress"
    )
    with pytest.raises(ArgoCDAPIError, match="does not have deployment with id 7"):
        h.rollback_application("web", history_id=7)  # the third attempt reaches Argo CD's own answer


def test_connection_refused_is_retried_then_raised(monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ARGOCD_DEFAULT",
        json.dumps({"conn_type": "argocd", "host": f"http://127.0.0.1:{free_port()}", "password": "t"}),
    )
    import httpx

    with pytest.raises(httpx.ConnectError):
        hook(max_attempts=2).list_applications()


async def test_async_hook_makes_the_same_calls(start_simulator) -> None:
    start_simulator(FAST)
    h = ArgoCDAsyncHook(backoff_seconds=0.01)
    assert (await h.version())["Version"].startswith("v3.5.1")
    await h.upsert_application(APP)
    assert (await h.get_application("web"))["metadata"]["name"] == "web"
    with pytest.raises(ArgoCDAPIError) as err:
        await h.get_application("ghost")
    assert err.value.status_code == 403


async def test_async_hook_logs_in_with_a_password(start_simulator, monkeypatch) -> None:
    sim = start_simulator(FAST)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ARGOCD_DEFAULT",
        json.dumps(
            {"conn_type": "argocd", "host": sim.url, "login": "admin", "password": "sandbox-password"}
        ),
    )
    assert (await ArgoCDAsyncHook().list_applications())["items"] == []

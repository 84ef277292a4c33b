"""platformctl refuses bad arguments before any call, polls with backoff, and maps verdicts to exit codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from scripts import platformctl
from tests.conftest import free_port


class FakeAirflowServer:
    """A real HTTP server on 127.0.0.1 that answers Airflow's REST calls from a script."""

    def __init__(self, states: list[str], xcoms: dict[str, Any]) -> None:
        self.calls: list[str] = []
        calls, state_iter = self.calls, iter(states)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                calls.append(f"POST {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/auth/token":
                    self._answer(201, {"access_token": "t"})
                else:
                    self._answer(200, {"dag_run_id": "run-1"})

            def do_PATCH(self) -> None:
                calls.append(f"PATCH {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(200, {})

            def do_GET(self) -> None:
                calls.append(f"GET {self.path}")
                if "/xcomEntries/" in self.path:
                    key = self.path.split("/taskInstances/")[1]
                    if key in xcoms:
                        self._answer(200, {"value": xcoms[key]})
                    else:
                        self._answer(404, {"detail": "not found"})
                else:
                    self._answer(200, {"state": next(state_iter)})

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def airflow(monkeypatch) -> Iterator[Any]:
    servers: list[FakeAirflowServer] = []

    def start(states: list[str], xcoms: dict[str, Any] | None = None) -> FakeAirflowServer:
        server = FakeAirflowServer(states, xcoms or {})
        servers.append(server)
        monkeypatch.setenv("AIRFLOW_URL", server.url)
        monkeypatch.setenv("AIRFLOW_PASSWORD", "pw")
        monkeypatch.setattr(platformctl, "pause_for", lambda seconds: None)
        return server

    yield start
    for server in servers:
        server.server.shutdown()


DEPLOY_OK = {
    "ok": True,
    "waves": {"core": {"ok": True, "gate": "success"}},
    "components": [{"component": "vault", "verdict": "deployed", "sync": "Synced", "health": "Healthy"}],
}


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--env", "qa"],
        ["deploy", "--env", "dev", "--waves", "core,bogus"],
        ["deploy", "--env", "dev", "--revision", "main; rm -rf /"],
        ["deploy", "--env", "dev", "--timeout", "soon"],
        ["validate", "--scope", "everything"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_3_before_any_call(airflow, argv: list[str]) -> None:
    server = airflow([])
    with pytest.raises(SystemExit) as exit_:
        platformctl.main(argv)
    assert exit_.value.code == 3
    assert server.calls == []


def test_deploy_waits_and_prints_each_component(airflow, capsys) -> None:
    server = airflow(["queued", "running", "success"], {"summary/xcomEntries/report": DEPLOY_OK})
    code = platformctl.main(
        ["deploy", "--env", "staging", "--waves", "core", "--revision", "abc123", "--wait"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "wave core           ok" in out and "vault" in out and "deployed" in out
    assert server.calls[:3] == [
        "POST /auth/token",
        "PATCH /api/v2/dags/platform_deploy",
        "POST /api/v2/dags/platform_deploy/dagRuns",
    ]


def test_a_failed_verdict_exits_1(airflow) -> None:
    report = DEPLOY_OK | {"ok": False}
    airflow(["failed"], {"summary/xcomEntries/report": report})
    assert platformctl.main(["deploy", "--env", "dev", "--wait"]) == 1


def test_timeout_exits_2(airflow) -> None:
    airflow(["running"] * 100)
    assert platformctl.main(["validate", "--wait", "--timeout", "5s"]) == 2


def test_drift_found_exits_1_and_clean_exits_0(airflow) -> None:
    airflow(["success"], {"publish/xcomEntries/return_value": {"drifted": True}})
    assert platformctl.main(["drift", "--wait"]) == 1
    airflow(["success"], {"publish/xcomEntries/return_value": {"drifted": False}})
    assert platformctl.main(["drift", "--wait"]) == 0


def test_backoff_doubles_up_to_30_seconds() -> None:
    pauses: list[float] = []

    class Runs:
        def state(self, dag_id: str, run_id: str) -> str:
            return "running" if len(pauses) < 6 else "success"

    assert platformctl.wait(Runs(), "d", "r", timeout=3600, sleep=pauses.append) == "success"  # type: ignore[arg-type]
    assert pauses == [2, 4, 8, 10, 10, 10]

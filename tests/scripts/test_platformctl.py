"""platformctl refuses bad arguments before any call, polls with backoff, and maps verdicts to exit codes."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from scripts import platformctl
from tests.conftest import free_port


class FakeAirflowServer:
    """A real HTTP server on 127.0.0.1 that answers Airflow's REST calls from a script."""

    def __init__(
        self, states: list[str], xcoms: dict[str, Any], failures: dict[str, int] | None = None
    ) -> None:
        self.calls: list[str] = []
        self.states, self.xcoms = iter(states), xcoms
        self.failing = dict(failures or {})  # "METHOD path" (or "MADE path") -> how many 503s first
        self.made: set[str] = set()
        self.server = HTTPServer(("127.0.0.1", free_port()), _Handler)
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fails(self, key: str) -> bool:
        """Whether this call answers 503 (and one fewer will)."""
        if self.failing.get(key, 0) > 0:
            self.failing[key] -= 1
            return True
        return False


class _Handler(BaseHTTPRequestHandler):
    @property
    def fake(self) -> FakeAirflowServer:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _failing(self, method: str) -> bool:
        self.fake.calls.append(f"{method} {self.path}")
        if self.fake.fails(f"{method} {self.path}"):
            self._answer(503, {"detail": "busy"})
            return True
        return False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self._failing("POST"):
            return
        if self.path == "/auth/token":
            self._answer(201, {"access_token": "t"})
        elif body["dag_run_id"] in self.fake.made:
            self._answer(409, {"detail": "already exists"})
        else:
            self.fake.made.add(body["dag_run_id"])
            if self.fake.fails(f"MADE {self.path}"):  # made, but the answer is lost
                self._answer(503, {"detail": "busy"})
            else:
                self._answer(200, {"dag_run_id": body["dag_run_id"]})

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self._failing("PATCH"):
            self._answer(200, {})

    def do_GET(self) -> None:
        if self._failing("GET"):
            return
        if "/xcomEntries/" in self.path:
            key = self.path.split("/taskInstances/")[1]
            if key in self.fake.xcoms:
                self._answer(200, {"value": self.fake.xcoms[key]})
            else:
                self._answer(404, {"detail": "not found"})
        elif "/dagRuns/" not in self.path:  # the DAG: paused, as a new one is
            self._answer(200, {"dag_id": self.path.rsplit("/", 1)[1], "is_paused": True})
        else:
            self._answer(200, {"state": next(self.fake.states)})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def airflow(monkeypatch) -> Iterator[Any]:
    servers: list[FakeAirflowServer] = []

    def start(
        states: list[str], xcoms: dict[str, Any] | None = None, failures: dict[str, int] | None = None
    ) -> FakeAirflowServer:
        server = FakeAirflowServer(states, xcoms or {}, failures)
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
        ["backup"],
        ["backup", "--to", "/tmp/b", "--keep", "-1"],
        ["restore", "--from", "/tmp/b", "--keep", "2"],
        ["nonsense"],
    ],
)
@pytest.mark.slow
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
    assert server.calls[:4] == [
        "POST /auth/token",
        "GET /api/v2/dags/platform_deploy",
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
        def state(self, dag_id: str, run_id: str, missing: str | None = None) -> str:
            return "running" if len(pauses) < 6 else "success"

    assert platformctl.wait(Runs(), "d", "r", timeout=3600, sleep=pauses.append) == "success"  # type: ignore[arg-type]
    assert pauses == [2, 4, 8, 10, 10, 10]


def test_a_restore_from_a_location_it_cannot_read_says_so_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert platformctl.main(["restore", "--from", "ftp://backups.example.com/base"]) == 1
    assert "use s3://bucket/prefix or a folder" in capsys.readouterr().err


def test_backup_without_the_plugins_importable_says_how_to_make_them_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import base_platform.lifecycle

    # as where plugins/ is not on the path: the module cannot be imported
    monkeypatch.delattr(base_platform.lifecycle, "backup", raising=False)
    monkeypatch.setitem(sys.modules, "base_platform.lifecycle.backup", None)
    assert platformctl.main(["backup", "--to", "/tmp/b"]) == 3
    assert "need the plugins: PYTHONPATH=plugins" in capsys.readouterr().err


def test_a_restore_from_an_empty_folder_finds_no_backup(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert platformctl.main(["restore", "--from", str(tmp_path)]) == 1
    assert "no complete backup" in capsys.readouterr().err


def test_a_busy_api_server_is_asked_again_and_a_repeated_trigger_makes_one_run(airflow) -> None:
    """A 503 on a login and on a read: each is tried again."""
    runs = "POST /api/v2/dags/platform_validate/dagRuns"
    server = airflow(
        ["running", "success"],
        {"report/xcomEntries/return_value": {"verdict": "healthy"}, "report/xcomEntries/report_md": "ok"},
        failures={"POST /auth/token": 1, "GET /api/v2/dags/platform_validate": 2},
    )
    assert platformctl.main(["validate", "--scope", "core", "--wait"]) == 0
    assert server.calls.count("POST /auth/token") == 2
    assert server.calls.count("GET /api/v2/dags/platform_validate") == 3
    assert server.calls.count(runs) == 1


def test_an_api_server_busy_on_every_try_fails_the_call_after_four_with_its_answer(
    airflow, capsys: pytest.CaptureFixture[str]
) -> None:
    server = airflow(["success"], failures={"GET /api/v2/dags/platform_validate": 9})
    assert platformctl.main(["validate", "--scope", "core", "--wait"]) == 3
    assert server.calls.count("GET /api/v2/dags/platform_validate") == 4
    assert "GET /api/v2/dags/platform_validate: HTTP 503: busy" in capsys.readouterr().err


def test_no_api_server_at_all_is_an_api_error_after_four_tries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pauses: list[float] = []
    monkeypatch.setenv("AIRFLOW_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AIRFLOW_PASSWORD", "pw")
    monkeypatch.setattr(platformctl, "pause_for", pauses.append)
    assert platformctl.main(["validate", "--scope", "core"]) == 3
    assert pauses == [2.0, 4.0, 8.0] and "Connection refused" in capsys.readouterr().err


def test_a_trigger_answered_503_after_it_made_the_run_is_not_made_twice(airflow) -> None:
    runs = "/api/v2/dags/platform_validate/dagRuns"
    server = airflow(
        ["success"],
        {"report/xcomEntries/return_value": {"verdict": "healthy"}},
        failures={f"MADE {runs}": 1},
    )
    assert platformctl.main(["validate", "--scope", "core", "--wait"]) == 0
    assert server.calls.count(f"POST {runs}") == 2 and len(server.made) == 1

"""Shared fixtures: an isolated Airflow home, the contracts folder, and the Argo CD simulator.

Airflow reads its configuration at import, so the environment is set here, before any test
module imports it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT.parent / "shared" / "contracts"
SIM_TOKEN = "sandbox-token"

_home = Path(tempfile.mkdtemp(prefix="airflow-test-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_home / "logs"),
        "BASE_PLATFORM_POLL_SECONDS": "0.5",
    }
)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The isolated Airflow home goes with the session that made it."""
    shutil.rmtree(_home, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """Airflow's own deprecations are errors: code must use the Airflow 3 APIs."""
    config.addinivalue_line("filterwarnings", "error::airflow.exceptions.RemovedInAirflow4Warning")
    config.addinivalue_line(
        "filterwarnings", "error::airflow.utils.deprecation_tools.DeprecatedImportWarning"
    )


@pytest.fixture(scope="session")
def contracts_dir() -> Path:
    if not (CONTRACTS / "argocd-swagger.json").exists():
        pytest.skip(f"contract tests need {CONTRACTS} (present in CI; absent in a user's clone)")
    return CONTRACTS


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata DB, once per session, for dag.test()."""
    from airflow.utils.db import resetdb

    resetdb(skip_init=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimulatorProcess:
    """A running ``python -m sandbox.<kind>`` on a free loopback port."""

    def __init__(self, scenario: Path | str, tmp: Path, kind: str = "argocd") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"{kind}-sim-{self.port}.log").open("wb")
        command = [sys.executable, "-m", f"sandbox.{kind}", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--scenario", str(scenario)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        health = f"{self.url}/healthz" if kind == "argocd" else f"{self.url}/sandbox/healthz"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {Path(self.log.name).read_text()}")
            try:
                httpx.get(health, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {SIM_TOKEN}"}, timeout=10)

    def inject(
        self, path: str, status: int, count: int = 1, method: str | None = None, message: str = ""
    ) -> None:
        fault: dict[str, object] = {"path": path, "status": status, "count": count, "message": message}
        if method:
            fault["method"] = method
        httpx.post(f"{self.url}/sandbox/faults", json=fault, timeout=5).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


class SimulatorPool:
    """Idle simulators, one process reused by test after test through ``/sandbox/reset``.

    Starting a simulator costs an interpreter and its imports (about a second); resetting one costs
    a request. A test that stops or kills its simulator simply does not give it back.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.idle: dict[str, list[SimulatorProcess]] = {}

    def take(self, kind: str, scenario: str) -> SimulatorProcess:
        idle = self.idle.setdefault(kind, [])
        while idle:
            sim = idle.pop()
            try:
                httpx.post(
                    f"{sim.url}/sandbox/reset", json={"scenario": scenario}, timeout=10
                ).raise_for_status()
                return sim
            except httpx.HTTPError:
                sim.stop()  # dead, or refused the scenario: a fresh process says why
        return SimulatorProcess(scenario, self.tmp, kind=kind)

    def give_back(self, kind: str, sim: SimulatorProcess) -> None:
        if sim.proc.poll() is None:
            self.idle.setdefault(kind, []).append(sim)

    def close(self) -> None:
        for sims in self.idle.values():
            for sim in sims:
                sim.stop()


@pytest.fixture(scope="session")
def simulator_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorPool]:
    pool = SimulatorPool(tmp_path_factory.mktemp("simulators"))
    yield pool
    pool.close()


def _simulators(
    kind: str, tmp_path: Path, pool: SimulatorPool, point_at: Callable[[SimulatorProcess], None]
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Simulators of one kind with a scenario (a dict, a file, or a name), from the session's pool."""
    started: list[SimulatorProcess] = []

    def start(scenario: dict[str, object] | str = "default.yaml") -> SimulatorProcess:
        if isinstance(scenario, dict):
            path = tmp_path / f"{kind}-scenario-{len(started)}.yaml"
            path.write_text(json.dumps(scenario))
            scenario = str(path)
        sim = pool.take(kind, scenario)
        started.append(sim)
        point_at(sim)
        return sim

    yield start
    for sim in started:
        pool.give_back(kind, sim)


@pytest.fixture
def start_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulator_pool: SimulatorPool
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start an Argo CD simulator and point argocd_default at it."""

    def point_at(sim: SimulatorProcess) -> None:
        conn = {
            "conn_type": "argocd",
            "host": sim.url,
            "password": SIM_TOKEN,
            "extra": {"backoff_seconds": 0.05},
        }
        monkeypatch.setenv("AIRFLOW_CONN_ARGOCD_DEFAULT", json.dumps(conn))

    yield from _simulators("argocd", tmp_path, simulator_pool, point_at)


@pytest.fixture
def start_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulator_pool: SimulatorPool
) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start a Vault simulator and point vault_default at it (userpass)."""
    yield from _simulators(
        "vault",
        tmp_path,
        simulator_pool,
        lambda sim: monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", vault_conn_uri(sim.port)),
    )


@pytest.fixture
def platform(
    start_simulator: Any, start_vault: Any
) -> Callable[..., tuple[SimulatorProcess, SimulatorProcess]]:
    """A whole platform deployed and locked down (tests/scenarios.py), with Vault beside it."""
    from tests.scenarios import deployed_platform, install_projects

    def start(
        environment: str = "dev", top: dict[str, Any] | None = None, **apps: Any
    ) -> tuple[SimulatorProcess, SimulatorProcess]:
        sim = start_simulator(deployed_platform(environment, **apps) | (top or {}))
        vault = start_vault()
        install_projects(environment)
        return sim, vault

    return start


def vault_conn_uri(port: int, tls: bool = False) -> str:
    extras = f"auth_type=userpass&kv_engine_version=2&use_tls={'true' if tls else 'false'}"
    return f"vault://airflow:{VAULT_PASSWORD}@127.0.0.1:{port}/secret?{extras}"


VAULT_PASSWORD = "sandbox-vault-password"
FAST = {"defaults": {"sync_seconds": 0.5, "healthy_after_seconds": 1.0}}


def iceberg_connection(database: Path, warehouse: Path) -> str:
    """``iceberg_default`` as make run has it: a SQLite catalog and a local warehouse."""
    return json.dumps({"conn_type": "sqlite", "host": str(database), "extra": {"warehouse": str(warehouse)}})


@pytest.fixture
def iceberg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Iceberg catalog of a test's own; returns the warehouse."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(tmp_path / "iceberg.db", tmp_path / "warehouse")
    )
    return tmp_path / "warehouse"


class Webhook:
    """A real HTTP server on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook/platform"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    """A webhook receiver behind the HTTP connection ``platform_webhook``."""
    hook = Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_WEBHOOK", json.dumps({"conn_type": "http", "host": hook.url}))
    yield hook
    hook.server.shutdown()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1 behind ``aws_default``, with buckets raw, curated and consumers;
    yields a boto3 client."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    connection = {
        "conn_type": "aws",
        "login": "moto-access-key",
        "password": "moto-secret-key",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="moto-access-key",
        aws_secret_access_key="moto-secret-key",
        region_name="us-east-1",
    )
    for bucket in ("raw", "curated", "consumers"):
        client.create_bucket(Bucket=bucket)
    yield client
    httpx.post(f"{endpoint}/moto-api/reset")  # moto's state outlives its server: the next test starts empty
    server.stop()


DOCS_WITH_BLOCKS = ("docs/ci.md", "docs/reliability.md", "README.md")


def doc_block(marker: str) -> str:
    """The fenced bash block right after ``<!-- e2e:MARKER -->`` in the docs that hold such blocks."""
    text = "".join((ROOT / page).read_text() for page in DOCS_WITH_BLOCKS)
    match = re.search(rf"<!-- e2e:{marker} .*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"no e2e:{marker} block in {', '.join(DOCS_WITH_BLOCKS)}"
    return match.group(1)

"""`make run`'s stack, started as a user would, driven by the README's own curl block.

It also proves that Ctrl-C stops every process and that a second start works.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e
README = ROOT / "README.md"


def readme_block(marker: str) -> str:
    """The fenced bash block right after ``<!-- e2e:MARKER -->`` in the README."""
    text = README.read_text()
    match = re.search(rf"<!-- e2e:{marker} .*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, f"README has no e2e:{marker} block"
    return match.group(1)


class DevStack:
    def __init__(self, home: Path) -> None:
        self.api_port, self.sim_port = free_port(), free_port()
        env = os.environ | {
            "AIRFLOW_PORT": str(self.api_port),
            "ARGOCD_SIM_PORT": str(self.sim_port),
            "BASE_DEV_HOME": str(home),
            "PYTHONPATH": str(ROOT),
        }
        for key in [
            k
            for k in env
            if k.startswith("AIRFLOW__") or k in {"AIRFLOW_HOME", "AIRFLOW_CONN_ARGOCD_DEFAULT"}
        ]:
            env.pop(key)
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "dev_stack.py")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self.password = ""
        self.child_pids: list[int] = []

    def wait_ready(self, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError("dev stack exited:\n" + "".join(self.output))
            self.output.append(line)
            if started := re.search(r"started .* pid (\d+)", line):
                self.child_pids.append(int(started.group(1)))
            if login := re.match(r"Login:\s+admin / (\S+)", line):
                self.password = login.group(1)
            if "Press Ctrl-C" in line:
                return
        raise AssertionError("dev stack did not get ready:\n" + "".join(self.output))

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        return self.proc.wait(timeout=90)


def _assert_bad_params_are_a_400(stack: DevStack) -> None:
    api = f"http://127.0.0.1:{stack.api_port}"
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": stack.password}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    for conf in ({"environment": "qa"}, {"waves": ["bogus"]}, {"components": ["nope"]}):
        answer = httpx.post(
            f"{api}/api/v2/dags/platform_deploy/dagRuns",
            headers=headers,
            json={"logical_date": None, "conf": conf},
            timeout=30,
        )
        assert answer.status_code == 400, (conf, answer.status_code, answer.text)
    runs = httpx.get(f"{api}/api/v2/dags/platform_deploy/dagRuns", headers=headers, timeout=30).json()
    assert runs["total_entries"] == 0  # refused before any run existed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_serves_the_ui_runs_the_readme_curl_and_stops_cleanly(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "home")
    try:
        stack.wait_ready()
        assert stack.password and len(stack.child_pids) == 5
        ui = httpx.get(f"http://127.0.0.1:{stack.api_port}/", timeout=10)
        assert ui.status_code == 200
        env = os.environ | {
            "AIRFLOW": f"http://127.0.0.1:{stack.api_port}",
            "AIRFLOW_PASSWORD": stack.password,
        }
        result = subprocess.run(
            ["bash", "-c", readme_block("smoke-curl")], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "success" in result.stdout
    finally:
        assert stack.ctrl_c() == 0
    time.sleep(1)
    assert [pid for pid in stack.child_pids if _alive(pid)] == []

    again = DevStack(tmp_path / "home")  # a second `make run` on the same home works
    try:
        again.wait_ready()
        assert again.password == stack.password
    finally:
        assert again.ctrl_c() == 0

"""How close does platform_deploy get to the critical path, and how much faster is it than a script?

One run, same catalog, same simulated per-app durations:

1. ``platform_deploy`` (dev, all waves) on ``make run``'s real stack (api-server, scheduler,
   dag-processor, triggerer, LocalExecutor), triggered over REST; wall time from the run's
   own start and end dates.
2. The baseline: a one-at-a-time script with the same hook and the same correct wait gates,
   deploying every component in dependency order against a fresh simulator.
3. The critical-path lower bound computed from the durations.

Run with ``make bench``. Nothing here is asserted: it prints measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from base_platform.argocd.hooks import ArgoCDHook  # noqa: E402
from base_platform.argocd.operators import request_time  # noqa: E402
from base_platform.argocd.status import Outcome, Seen, WaitSpec, evaluate  # noqa: E402
from base_platform.catalog.loader import load_catalog, load_environment  # noqa: E402
from base_platform.catalog.render import project_names, render_application, render_project  # noqa: E402
from base_platform.plan.deploy import critical_path, topological_order  # noqa: E402
from scripts.dev_stack import launch, wait_ready  # noqa: E402

SYNC_SECONDS = 1.0
WAVE_SECONDS = {"core": 6.0, "shared": 8.0, "orchestration": 10.0, "apps": 6.0, "base": 5.0}
POLL_SECONDS = 2.0


def durations() -> dict[str, float]:
    """Seconds from sync request to Healthy, per component: slower waves, some slow apps."""
    result = {c.name: WAVE_SECONDS[c.wave.value] for c in load_catalog().components}
    result.update({"kubeflow": 16.0, "vault": 9.0, "data-storage": 8.0})
    return result


def scenario_file(directory: Path) -> Path:
    apps = {name: {"healthy_after_seconds": seconds} for name, seconds in durations().items()}
    path = directory / "bench-scenario.yaml"
    path.write_text(
        json.dumps({"defaults": {"sync_seconds": SYNC_SECONDS, "reconcile_lag_seconds": 0.5}, "apps": apps})
    )
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_dag(api: str, password: str) -> tuple[float, str]:
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": password}).json()[
        "access_token"
    ]
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    for _ in range(120):  # wait for the dag-processor to parse the DAG
        if client.get("/api/v2/dags/platform_deploy").status_code == 200:
            break
        time.sleep(1)
    client.patch("/api/v2/dags/platform_deploy", json={"is_paused": False}).raise_for_status()
    run = client.post(
        "/api/v2/dags/platform_deploy/dagRuns", json={"logical_date": None, "conf": {"environment": "dev"}}
    ).json()
    while True:
        state = client.get(f"/api/v2/dags/platform_deploy/dagRuns/{run['dag_run_id']}").json()
        if state["state"] in {"success", "failed"}:
            break
        time.sleep(2)
    start, end = (datetime.fromisoformat(state[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds(), state["state"]


def sequential_baseline(sim_url: str) -> float:
    """Deploy one component at a time, each waited for with the same correct gates."""
    os.environ["AIRFLOW_CONN_ARGOCD_DEFAULT"] = json.dumps(
        {"conn_type": "argocd", "host": sim_url, "password": "sandbox-token"}
    )
    catalog, env = load_catalog(), load_environment("dev")
    hook = ArgoCDHook()
    started = time.monotonic()
    for name in project_names(catalog):
        hook.upsert_project(render_project(name, catalog, env))
    for component in topological_order(catalog.components):
        hook.upsert_application(render_application(component, env))
        spec = WaitSpec(requested_at=datetime.fromisoformat(request_time()), revision=env.target_revision)
        hook.sync_application(component.name, revision=env.target_revision)
        verdict = evaluate(hook.get_application(component.name), spec, Seen())
        while verdict.outcome is Outcome.WAITING:
            time.sleep(POLL_SECONDS)
            verdict = evaluate(hook.get_application(component.name), spec, verdict.seen)
        assert verdict.done, verdict.reason
    return time.monotonic() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = scenario_file(Path(tmp))
        extra = {"ARGOCD_SIM_SCENARIO": str(scenario), "BASE_PLATFORM_POLL_SECONDS": str(POLL_SECONDS)}
        stack = wait_ready(launch(Path(tmp) / "home", free_port(), free_port(), free_port(), extra))
        try:
            dag_seconds, state = run_dag(stack.api, stack.password)
        finally:
            stack.proc.terminate()
            stack.proc.wait(timeout=60)
        sim_port = free_port()
        sim = subprocess.Popen(
            [sys.executable, "-m", "sandbox.argocd", "--port", str(sim_port), "--scenario", str(scenario)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            baseline_seconds = sequential_baseline(f"http://127.0.0.1:{sim_port}")
        finally:
            sim.terminate()
    per_app = durations()
    bound, path = critical_path(load_catalog(), {k: v + SYNC_SECONDS for k, v in per_app.items()})
    print(
        f"components: {len(per_app)}; simulated sync {SYNC_SECONDS:.0f} s + healthy after "
        f"{min(per_app.values()):.0f}-{max(per_app.values()):.0f} s; poll every {POLL_SECONDS:.0f} s"
    )
    print(f"critical path: {' -> '.join(path)}")
    print(f"{'platform_deploy (DAG, ' + state + ')':<40} {dag_seconds:8.1f} s")
    print(f"{'sequential script (baseline, measured)':<40} {baseline_seconds:8.1f} s")
    print(f"{'critical-path lower bound':<40} {bound:8.1f} s")
    print(
        f"DAG overhead over the critical path: {dag_seconds / bound:.2f}x; "
        f"speed-up over the sequential script: {baseline_seconds / dag_seconds:.2f}x"
    )


if __name__ == "__main__":
    main()

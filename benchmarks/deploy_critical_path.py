"""How close does platform_deploy get to the critical path, and how much faster is it than a script?

One run, same catalog, same simulated per-app durations:

1. ``platform_deploy`` (dev, all waves) on ``make run``'s real stack (api-server, scheduler,
   dag-processor, triggerer, LocalExecutor), triggered over REST; wall time from the run's own
   start and end dates, and every task's start and end, from which each component's overhead
   is measured: from the moment its last upstream task ended to its own end, less the app's
   simulated sync and rollout time.
2. The baseline: a one-at-a-time script with the same actions and the same wait gates,
   deploying every component in dependency order against a fresh simulator.
3. Two lower bounds from the durations: the dependency critical path, and the same with the
   wave gates as barriers (what gating costs in parallelism).

It also estimates both sides for realistic apps (1 to 5 minutes to become Healthy) from the
measured overheads, and prints platform_deploy's task count and parse time. Targets are
printed with PASS or FAIL. Run with ``make bench`` (``--dag-only`` skips the baseline).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from base_platform.argocd.actions import start_sync, wait_until_done  # noqa: E402
from base_platform.argocd.hooks import ArgoCDHook  # noqa: E402
from base_platform.catalog.loader import default_catalog, environment  # noqa: E402
from base_platform.catalog.render import project_names, render_application, render_project  # noqa: E402
from base_platform.plan.deploy import critical_path, topological_order  # noqa: E402
from base_platform.plan.graph import Graph, Kind, Node, deploy_graph  # noqa: E402
from scripts.dev_stack import launch, wait_ready  # noqa: E402

SYNC_SECONDS = 1.0
WAVE_SECONDS = {"core": 6.0, "shared": 8.0, "orchestration": 10.0, "apps": 6.0, "base": 5.0}
POLL_SECONDS = 1.0
TARGET_BOUND_RATIO = 1.5
TARGET_SPEEDUP = 1.8


def durations() -> dict[str, float]:
    """Seconds from sync request to Healthy, per component: slower waves, some slow apps."""
    result = {c.name: WAVE_SECONDS[c.wave.value] for c in default_catalog().components}
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


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def longest_path(graph: Graph, cost: Callable[[Node], float]) -> tuple[float, list[str]]:
    """The longest chain of the graph, each node costing ``cost(node)``."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for node in graph.nodes:  # nodes come in dependency order
        before = max(node.upstream, key=lambda up: finish[up], default=None)
        finish[node.task_id] = (finish[before] if before else 0.0) + cost(node)
        via[node.task_id] = before
    end = max(finish, key=lambda task_id: finish[task_id])
    path, step = [], end
    while step:
        path.append(step)
        step = via[step]  # type: ignore[assignment]
    return finish[end], path[::-1]


def run_dag(api: str, password: str) -> tuple[float, str, list[dict[str, Any]], datetime]:
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": password}).json()[
        "access_token"
    ]
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    client.patch("/api/v2/dags/platform_deploy", json={"is_paused": False}).raise_for_status()
    run = client.post(
        "/api/v2/dags/platform_deploy/dagRuns", json={"logical_date": None, "conf": {"environment": "dev"}}
    ).json()
    path = f"/api/v2/dags/platform_deploy/dagRuns/{run['dag_run_id']}"
    while (state := client.get(path).json())["state"] not in {"success", "failed"}:
        time.sleep(2)
    tis = client.get(f"{path}/taskInstances", params={"limit": 100}).json()["task_instances"]
    start, end = (_time(state[k]) for k in ("start_date", "end_date"))
    return (end - start).total_seconds(), state["state"], tis, start


def overheads(graph: Graph, tis: list[dict[str, Any]], per_app: Mapping[str, float]) -> dict[str, float]:
    """Per component: from its last upstream task's end to its own end, less the app's own time."""
    ends = {ti["task_id"]: _time(ti["end_date"]) for ti in tis}
    result = {}
    for node in graph.of_kind(Kind.COMPONENT):
        ready = max(ends[up] for up in node.upstream)
        took = (ends[node.task_id] - ready).total_seconds()
        result[node.name] = took - per_app[node.name] - SYNC_SECONDS
    return result


def step_seconds(graph: Graph, tis: list[dict[str, Any]], kind: Kind) -> list[float]:
    """Per task of ``kind``: from its last upstream task's end to its own end."""
    ends = {ti["task_id"]: _time(ti["end_date"]) for ti in tis}
    return [
        (ends[n.task_id] - max((ends[up] for up in n.upstream), default=ends[n.task_id])).total_seconds()
        for n in graph.of_kind(kind)
    ]


def sequential_baseline(sim_url: str) -> float:
    """Deploy one component at a time, each waited for with the same gates."""
    os.environ["AIRFLOW_CONN_ARGOCD_DEFAULT"] = json.dumps(
        {"conn_type": "argocd", "host": sim_url, "password": "sandbox-token"}
    )
    catalog, env = default_catalog(), environment("dev")
    began = time.monotonic()
    with ArgoCDHook() as hook:
        for name in project_names(catalog):
            hook.upsert_project(render_project(name, catalog, env))
        for component in topological_order(catalog.components):
            hook.upsert_application(render_application(component, env))
            sync = start_sync(hook, component.name, revision=env.target_revision)
            verdict = wait_until_done(hook, component.name, sync.wait_spec(), 600, POLL_SECONDS)
            assert verdict.done, verdict.reason
    return time.monotonic() - began


def parse_seconds(runs: int = 5) -> list[float]:
    """platform_deploy.py parsed as a task process parses it: a fresh interpreter, Airflow imported."""
    probe = (
        "import time; from airflow.dag_processing.dagbag import DagBag; t = time.perf_counter(); "
        f"b = DagBag(dag_folder={str(ROOT / 'dags' / 'platform_deploy.py')!r}); "
        "print(time.perf_counter() - t, len(b.dags['platform_deploy'].tasks))"
    )
    env = os.environ | {"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}", "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = [
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        for _ in range(runs)
    ]
    return [float(o.stdout.split()[-2]) for o in out]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    dag_only = "--dag-only" in sys.argv
    catalog, per_app = default_catalog(), durations()
    graph = deploy_graph(catalog)
    with tempfile.TemporaryDirectory() as tmp:
        scenario = scenario_file(Path(tmp))
        extra = {"ARGOCD_SIM_SCENARIO": str(scenario), "BASE_PLATFORM_POLL_SECONDS": str(POLL_SECONDS)}
        home = Path(os.environ.get("BENCH_HOME") or Path(tmp) / "home")  # BENCH_HOME keeps the logs
        stack = wait_ready(launch(home, free_port(), free_port(), free_port(), extra))
        try:
            dag_seconds, state, tis, started = run_dag(stack.api, stack.password)
            if tis_file := os.environ.get("BENCH_TASKS_JSON"):  # for a closer look at where time went
                Path(tis_file).write_text(json.dumps(tis, indent=1))
        finally:
            stack.proc.terminate()
            stack.proc.wait(timeout=60)
        baseline_seconds = float("nan")
        if not dag_only:
            sim_port = free_port()
            sim = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox.argocd",
                    "--port",
                    str(sim_port),
                    "--scenario",
                    str(scenario),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            try:
                time.sleep(2)
                baseline_seconds = sequential_baseline(f"http://127.0.0.1:{sim_port}")
            finally:
                sim.terminate()

    app_seconds = {name: seconds + SYNC_SECONDS for name, seconds in per_app.items()}
    bound, path = critical_path(catalog, app_seconds)
    gated, _ = longest_path(
        graph, lambda n: app_seconds.get(n.name, 0.0) if n.kind is Kind.COMPONENT else 0.0
    )
    over = overheads(graph, tis, per_app)
    gates = step_seconds(graph, tis, Kind.GATE)
    approved = next(_time(ti["end_date"]) for ti in tis if ti["task_id"] == "approve")
    head = (approved - started).total_seconds()  # run start to the end of plan and approve
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores")
    print(
        f"components: {len(per_app)}; simulated sync {SYNC_SECONDS:.0f} s + healthy after "
        f"{min(per_app.values()):.0f}-{max(per_app.values()):.0f} s; poll every {POLL_SECONDS:g} s"
    )
    parse = parse_seconds()
    median_parse = statistics.median(parse)
    print(f"platform_deploy: {len(graph.nodes)} tasks; parse {median_parse:.2f} s (median of {len(parse)})")
    print(f"critical path: {' -> '.join(path)}")
    print(f"{'platform_deploy (DAG, ' + state + ')':<44} {dag_seconds:8.1f} s")
    print(f"{'sequential script (baseline, measured)':<44} {baseline_seconds:8.1f} s")
    print(f"{'critical-path lower bound (dependencies)':<44} {bound:8.1f} s  (sync + healthy per app)")
    floor, _ = critical_path(catalog, per_app)  # the simulator's sync runs inside the healthy time
    print(f"{'  the same, sync inside the rollout time':<44} {floor:8.1f} s")
    print(f"{'with wave gates as barriers (what gates cost)':<44} {gated:8.1f} s  (+{gated - bound:.1f} s)")
    print(
        f"per-component overhead: median {statistics.median(over.values()):.1f} s, "
        f"mean {statistics.fmean(over.values()):.1f} s, max {max(over.values()):.1f} s "
        f"({max(over, key=lambda n: over[n])}); gates {statistics.fmean(gates):.1f} s each; "
        f"run start to approve done {head:.1f} s"
    )
    ratio, speedup = dag_seconds / bound, baseline_seconds / dag_seconds
    target = f"target <= {TARGET_BOUND_RATIO}x"
    print(f"DAG / critical path: {ratio:.2f}x ({target}): {verdict(ratio <= TARGET_BOUND_RATIO)}")
    target = f"target >= {TARGET_SPEEDUP}x"
    print(f"speed-up over the script: {speedup:.2f}x ({target}): {verdict(speedup >= TARGET_SPEEDUP)}")
    realistic(
        graph,
        catalog,
        statistics.fmean(over.values()),
        statistics.fmean(gates),
        head,
        baseline_seconds,
        per_app,
    )


def realistic(
    graph: Graph,
    catalog: Any,
    overhead: float,
    gate: float,
    fixed: float,
    baseline: float,
    per_app: Mapping[str, float],
) -> None:
    """Both sides estimated for apps that take 1 to 5 minutes, from the overheads measured above."""
    rng = random.Random(7)
    minutes = {c.name: rng.uniform(60, 300) for c in catalog.components}
    script_per_app = (baseline - sum(per_app.values()) - SYNC_SECONDS * len(per_app)) / len(per_app)
    cost = {Kind.COMPONENT: overhead, Kind.GATE: gate}
    dag, _ = longest_path(graph, lambda n: minutes.get(n.name, 0.0) + cost.get(n.kind, 0.0))
    dag += fixed
    bound, _ = critical_path(catalog, minutes)
    script = sum(minutes.values()) + script_per_app * len(minutes)
    print(
        f"estimated with apps taking 1-5 min (seeded): DAG {dag / 60:.1f} min, "
        f"critical path {bound / 60:.1f} min ({dag / bound:.2f}x), "
        f"script {script / 60:.1f} min ({script / dag:.2f}x slower)"
    )


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()

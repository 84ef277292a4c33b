"""What the steps of ``platform_deploy`` do at run time, as plain functions over the hook.

Kept apart from the DAG builder so each piece can be tested against the simulator without
running a DAG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from base_platform.argocd.actions import health_problem
from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.status import describe
from base_platform.catalog.loader import environment
from base_platform.catalog.models import Catalog, Component, Wave
from base_platform.catalog.render import project_names, render_project
from base_platform.checks.component import run_component_checks
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult
from base_platform.checks.suite import run_gate
from base_platform.plan.deploy import SelectionError, select
from base_platform.types import JSON


class DeployError(Exception):
    """A deploy step failed for a reason the run should report as is."""


def plan_run(catalog: Catalog, params: Mapping[str, Any], hook: ArgoCDHook) -> dict[str, Any]:
    """Select the components and check the dependencies this run does not deploy."""
    env = environment(params["environment"])
    try:
        plan = select(catalog, params.get("waves") or None, params.get("components") or None)
    except SelectionError as exc:
        raise DeployError(str(exc)) from exc
    problems = [p for name in plan.external if (p := health_problem(hook, name))]
    if problems:
        raise DeployError(
            "dependencies outside the selection are not Synced and Healthy: " + "; ".join(problems)
        )
    return plan.to_dict() | {
        "environment": env.name,
        "revision": params.get("target_revision") or env.target_revision,
        "dry_run": bool(params.get("dry_run")),
    }


def bootstrap(catalog: Catalog, environment_name: str, hook: ArgoCDHook, dry_run: bool) -> dict[str, Any]:
    """Argo CD answers, and the AppProjects exist with least-privilege destinations."""
    version = hook.version().get("Version")
    env = environment(environment_name)
    projects = [render_project(name, catalog, env) for name in project_names(catalog)]
    if not dry_run:
        for project in projects:
            hook.upsert_project(project)
    return {
        "argocd_version": version,
        "projects": [p["metadata"]["name"] for p in projects],
        "dry_run": dry_run,
    }


def check_context(catalog: Catalog, planned: Mapping[str, Any], hook: ArgoCDHook) -> CheckContext:
    """What this run's checks compare against: its environment and revision."""
    return CheckContext(hook, catalog, environment(planned["environment"]), planned["revision"])


def _fail_on_errors(what: str, results: list[CheckResult]) -> list[dict[str, Any]]:
    errors = [r for r in results if r.is_error]
    if errors:
        raise DeployError(f"{what}: " + " | ".join(r.line() for r in errors))
    return [r.to_dict() for r in results]


def verify(component: Component, ctx: CheckContext) -> list[dict[str, Any]]:
    """The component's own checks; any error fails the component."""
    return _fail_on_errors(component.name, run_component_checks(ctx, component))


def gate(wave: Wave, names: Sequence[str], ctx: CheckContext) -> list[dict[str, Any]]:
    """The wave's validation gate (:func:`base_platform.checks.suite.run_gate`)."""
    return _fail_on_errors(f"wave gate {wave.value}", run_gate(ctx, wave, names))


def component_report(
    name: str, state: str | None, outcome: Mapping[str, Any] | None, app: JSON | None, stopped_by: str | None
) -> dict[str, Any]:
    """One row of the summary: verdict from the task's state and outcome, facts from Argo CD."""
    outcome = outcome or {}
    if state == "success":
        verdict = (
            "dry run: " + str(outcome.get("verdict", "no errors"))[:120]
            if outcome.get("dry_run")
            else "deployed"
        )
    elif state == "failed":
        verdict = "failed: " + str(outcome.get("failure", "see the task log"))
    elif state == "upstream_failed" and stopped_by:
        verdict = f"stopped by the failed {stopped_by} gate"
    elif state == "upstream_failed":
        verdict = "blocked by a failed dependency"
    else:
        verdict = "not run"
    status = (app or {}).get("status", {})
    op = status.get("operationState", {})
    return {
        "component": name,
        "verdict": verdict,
        "ok": state == "success",
        "revision": status.get("sync", {}).get("revision"),
        "sync": status.get("sync", {}).get("status"),
        "health": status.get("health", {}).get("status"),
        "started_at": op.get("startedAt"),
        "finished_at": op.get("finishedAt"),
        "rolled_back": bool(outcome.get("rolled_back")),
        "detail": describe(app) if app else "not found in Argo CD",
    }


def summarize_deploy(
    catalog: Catalog,
    planned: Mapping[str, Any],
    task_states: Mapping[str, str | None],
    outcomes: Mapping[str, Mapping[str, Any] | None],
    hook: ArgoCDHook,
) -> dict[str, Any]:
    """The run's verdict per component and per wave, and the gate that stopped the rollout."""
    failed_gates = [w.value for w in Wave if task_states.get(f"{w.value}.gate") == "failed"]
    stopped_by = failed_gates[0] if failed_gates else None
    rows = []
    for name in planned["selected"]:
        component = catalog.component(name)
        task_id = f"{component.wave.value}.{name}"
        stopper = stopped_by if stopped_by and Wave(stopped_by).position < component.wave.position else None
        app, error = None, None
        try:
            app = hook.find_application(name)
        except ArgoCDAPIError as exc:  # report what we know rather than lose the whole summary
            error = f"Argo CD error: {exc.message}"
        row = component_report(name, task_states.get(task_id), outcomes.get(task_id), app, stopper)
        rows.append(row | ({"detail": error} if error else {}))
    waves = {}
    for wave in Wave:
        members = [r for r in rows if catalog.component(r["component"]).wave is wave]
        if members:
            gate_state = task_states.get(f"{wave.value}.gate")
            ok = all(r["ok"] for r in members) and gate_state in {"success", "skipped", None}
            waves[wave.value] = {"ok": ok, "components": len(members), "gate": gate_state}
    return {
        "environment": planned["environment"],
        "revision": planned["revision"],
        "dry_run": planned["dry_run"],
        "ok": all(r["ok"] for r in rows) and all(w["ok"] for w in waves.values()),
        "stopped_by_gate": stopped_by,
        "waves": waves,
        "components": rows,
    }


def format_report(report: Mapping[str, Any]) -> str:
    verdict = "OK" if report["ok"] else "FAILED"
    lines = [f"platform_deploy {report['environment']} @ {report['revision']}: {verdict}"]
    if report.get("stopped_by_gate"):
        lines.append(f"  rollout stopped by the failed gate of wave {report['stopped_by_gate']}")
    for wave, row in report["waves"].items():
        lines.append(f"  wave {wave:<14} {'ok' if row['ok'] else 'FAILED':<7} gate={row['gate']}")
    for row in report["components"]:
        lines.append(
            f"  {row['component']:<30} {row['verdict']:<32} sync={row['sync']} health={row['health']} "
            f"rev={(row['revision'] or '-')[:12]}"
        )
    return "\n".join(lines)

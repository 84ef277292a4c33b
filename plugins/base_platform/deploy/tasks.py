"""What the steps of ``platform_deploy`` do at run time, as plain functions over the hook.

Kept apart from the DAG builder so each piece can be tested against the simulator without
running a DAG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from base_platform.argocd.hooks import JSON, ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.operators import start_rollback, wait_until_done
from base_platform.argocd.status import Outcome, WaitSpec, describe, evaluate
from base_platform.catalog.loader import load_environment
from base_platform.catalog.models import Catalog, Component, Wave
from base_platform.catalog.render import project_names, render_application, render_project
from base_platform.checks.component import run_component_checks
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult
from base_platform.checks.suite import run_scope
from base_platform.plan.deploy import SelectionError, select


class DeployError(Exception):
    """A deploy step failed for a reason the run should report as is."""


def health_problem(hook: ArgoCDHook, name: str) -> str | None:
    """Why an app deployed earlier is not Synced and Healthy now, or None when it is."""
    app = hook.find_application(name)
    if app is None:
        return f"{name} (not found)"
    verdict = evaluate(app, WaitSpec())
    return None if verdict.outcome is Outcome.DONE else f"{name} ({verdict.reason})"


def plan_run(catalog: Catalog, params: Mapping[str, Any], hook: ArgoCDHook) -> dict[str, Any]:
    """Select the components and check the dependencies this run does not deploy."""
    env = load_environment(params["environment"])
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


def bootstrap(catalog: Catalog, environment: str, hook: ArgoCDHook, dry_run: bool) -> dict[str, Any]:
    """Argo CD answers, and the AppProjects exist with least-privilege destinations."""
    version = hook.version().get("Version")
    env = load_environment(environment)
    projects = [render_project(name, catalog, env) for name in project_names(catalog)]
    if not dry_run:
        for project in projects:
            hook.upsert_project(project)
    return {
        "argocd_version": version,
        "projects": [p["metadata"]["name"] for p in projects],
        "dry_run": dry_run,
    }


def deadline_for(component: Component, wave_timeout: int, now: datetime | None = None) -> str:
    """The wait's absolute deadline: the component's timeout, capped by its wave's."""
    now = now or datetime.now(UTC)
    return (now + timedelta(seconds=min(component.timeout, wave_timeout))).replace(microsecond=0).isoformat()


def render(component: Component, planned: Mapping[str, Any]) -> dict[str, Any]:
    """The Application to upsert, the revision to sync, and the wait's deadline."""
    env = load_environment(planned["environment"])
    revision = planned["revision"]
    return {
        "application": render_application(component, env, revision),
        "revision": revision,
        "deadline": deadline_for(component, env.wave_timeouts[component.wave]),
    }


def check_context(catalog: Catalog, planned: Mapping[str, Any], hook: ArgoCDHook) -> CheckContext:
    """What this run's checks compare against: its environment and revision."""
    return CheckContext(hook, catalog, load_environment(planned["environment"]), planned["revision"])


def _fail_on_errors(what: str, results: list[CheckResult]) -> list[dict[str, Any]]:
    errors = [r for r in results if r.is_error]
    if errors:
        raise DeployError(f"{what}: " + " | ".join(r.line() for r in errors))
    return [r.to_dict() for r in results]


def verify(component: Component, ctx: CheckContext) -> list[dict[str, Any]]:
    """The component's own checks; any error fails the component."""
    return _fail_on_errors(component.name, run_component_checks(ctx, component))


def gate(wave: Wave, names: Sequence[str], ctx: CheckContext) -> list[dict[str, Any]]:
    """The wave's validation gate: ``platform_validate``'s checks for this wave, on what was deployed."""
    return _fail_on_errors(f"wave gate {wave.value}", run_scope(ctx, wave.value, names))


def rollback(
    name: str, previous_history_id: int | None, hook: ArgoCDHook, timeout: float, poll: float = 5.0
) -> dict[str, Any]:
    """Roll back to what was deployed before this run's sync, and wait until it is done."""
    if previous_history_id is None:
        return {"app_name": name, "rolled_back": False, "reason": "no earlier deployment to roll back to"}
    started = start_rollback(hook, name, previous_history_id, disable_auto_sync=True)
    spec = WaitSpec(
        requested_at=datetime.fromisoformat(started["requested_at"]), revision=started["revision"]
    )
    verdict = wait_until_done(hook, name, spec, timeout, poll)
    if not verdict.done:
        raise DeployError(
            f"rollback of {name} to history {previous_history_id} did not finish: {verdict.reason}"
        )
    return {
        "app_name": name,
        "rolled_back": True,
        "history_id": previous_history_id,
        "revision": started["revision"],
    }


def component_report(name: str, states: Mapping[str, str | None], app: JSON | None) -> dict[str, Any]:
    """One row of the summary: verdict from the task states, facts from Argo CD."""
    failed = [step for step, state in states.items() if state == "failed"]
    if failed:
        verdict = f"failed at {failed[0]}"
    elif states.get("verify") == "success":
        verdict = "deployed"
    elif states.get("upsert") == "success" and states.get("sync") == "skipped":
        verdict = "dry run: would be created"
    elif states.get("wait") == "success":
        verdict = "dry run: no errors"
    elif "upstream_failed" in states.values():
        verdict = "blocked by a failed dependency"
    else:
        verdict = "not run"
    status = (app or {}).get("status", {})
    op = status.get("operationState", {})
    return {
        "component": name,
        "verdict": verdict,
        "ok": verdict == "deployed" or verdict.startswith("dry run"),
        "revision": status.get("sync", {}).get("revision"),
        "sync": status.get("sync", {}).get("status"),
        "health": status.get("health", {}).get("status"),
        "started_at": op.get("startedAt"),
        "finished_at": op.get("finishedAt"),
        "rolled_back": states.get("rollback") == "success",
        "detail": describe(app) if app else "not found in Argo CD",
    }


def summarize(
    catalog: Catalog, planned: Mapping[str, Any], task_states: Mapping[str, str | None], hook: ArgoCDHook
) -> dict[str, Any]:
    """The run's verdict per component and per wave."""
    rows = []
    for name in planned["selected"]:
        component = catalog.component(name)
        prefix = f"{component.wave.value}.{name}."
        states = {tid.removeprefix(prefix): st for tid, st in task_states.items() if tid.startswith(prefix)}
        try:
            rows.append(component_report(name, states, hook.find_application(name)))
        except ArgoCDAPIError as exc:  # report what we know rather than lose the whole summary
            rows.append(component_report(name, states, None) | {"detail": f"Argo CD error: {exc.message}"})
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
        "waves": waves,
        "components": rows,
    }


def format_report(report: Mapping[str, Any]) -> str:
    verdict = "OK" if report["ok"] else "FAILED"
    lines = [f"platform_deploy {report['environment']} @ {report['revision']}: {verdict}"]
    for wave, row in report["waves"].items():
        lines.append(f"  wave {wave:<14} {'ok' if row['ok'] else 'FAILED':<7} gate={row['gate']}")
    for row in report["components"]:
        lines.append(
            f"  {row['component']:<30} {row['verdict']:<32} sync={row['sync']} health={row['health']} "
            f"rev={(row['revision'] or '-')[:12]}"
        )
    return "\n".join(lines)

"""Checks of one component: its Application exists, is Synced at the wanted revision and
Healthy, and so is every resource in its tree; plus the extra checks the catalog names."""

from __future__ import annotations

from collections.abc import Callable

from base_platform.argocd.hooks import ArgoCDAPIError
from base_platform.argocd.status import ResourceKey, describe
from base_platform.catalog.models import CheckName, Component
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult, Severity
from base_platform.vault import client as vault

ComponentCheck = Callable[[CheckContext, Component], CheckResult]
NOT_FOUND = "Application not found in Argo CD"


def _result(
    check: str, component: Component, passed: bool, message: str, severity: Severity = Severity.ERROR
) -> CheckResult:
    return CheckResult(check, component.wave.value, component.name, passed, message, severity)


def app_exists(ctx: CheckContext, component: Component) -> CheckResult:
    app = ctx.applications.get(component.name)
    if app is None:
        return _result("app_exists", component, False, NOT_FOUND)
    return _result("app_exists", component, True, f"in project {app['spec'].get('project')}")


def app_synced_healthy(ctx: CheckContext, component: Component) -> CheckResult:
    """Synced, at the revision the overlay (or the run) asks for, Healthy, no operation running."""
    app = ctx.applications.get(component.name)
    if app is None:
        return _result("app_synced_healthy", component, False, NOT_FOUND)
    status = app.get("status", {})
    wanted = ctx.desired_revision
    tracked = app["spec"].get("source", {}).get("targetRevision")
    problems = []
    if tracked != wanted:
        problems.append(f"tracks {tracked!r}, not {wanted!r}")
    if status.get("sync", {}).get("status") != "Synced":
        problems.append("not Synced")
    if status.get("health", {}).get("status") != "Healthy":
        problems.append("not Healthy")
    if app.get("operation"):
        problems.append("an operation is running")
    state = describe(app)
    if problems:
        return _result("app_synced_healthy", component, False, f"{', '.join(problems)} ({state})")
    return _result("app_synced_healthy", component, True, f"at {wanted} ({state})")


def _unhealthy(
    ctx: CheckContext, component: Component, kinds: set[str] | None = None
) -> tuple[int, list[str]]:
    nodes = ctx.resource_tree(component.name).get("nodes") or []
    judged = [n for n in nodes if n.get("health") and (kinds is None or n.get("kind") in kinds)]
    bad = [
        f"{ResourceKey.from_dict(n)}: {n['health'].get('status')}"
        + (f": {n['health']['message']}" if n["health"].get("message") else "")
        for n in judged
        if n["health"].get("status") != "Healthy"
    ]
    return len(judged), bad


def resource_tree_healthy(ctx: CheckContext, component: Component) -> CheckResult:
    """Every resource with a health status in the app's resource tree is Healthy."""
    if component.name not in ctx.applications:
        return _result("resource_tree_healthy", component, False, NOT_FOUND)
    total, bad = _unhealthy(ctx, component)
    if bad:
        return _result("resource_tree_healthy", component, False, f"{len(bad)} unhealthy: " + "; ".join(bad))
    return _result("resource_tree_healthy", component, True, f"{total} resources Healthy")


def argocd_api(ctx: CheckContext, component: Component) -> CheckResult:
    """The Argo CD API answers with its version."""
    version = ctx.hook.version().get("Version", "")
    return _result("argocd_api", component, bool(version), f"Argo CD {version or 'returned no version'}")


def vault_health(ctx: CheckContext, component: Component) -> CheckResult:
    """Vault is initialised and unsealed (sys/health through hvac, connection ``vault_default``)."""
    if not ctx.environment.vault_enabled:
        return _result("vault_health", component, True, f"Vault is not enabled in {ctx.environment.name}")
    health = vault.health(ctx.vault_conn_id)
    return _result("vault_health", component, health.ok, health.describe())


def certificates_ready(ctx: CheckContext, component: Component) -> CheckResult:
    """cert-manager's Certificates are Healthy (Ready)."""
    if component.name not in ctx.applications:
        return _result("certificates_ready", component, False, NOT_FOUND)
    total, bad = _unhealthy(ctx, component, {"Certificate"})
    if bad:
        return _result("certificates_ready", component, False, "; ".join(bad))
    if total == 0:
        return _result(
            "certificates_ready", component, False, "no Certificate found", severity=Severity.WARNING
        )
    return _result("certificates_ready", component, True, f"{total} Certificates Ready")


ALWAYS: tuple[ComponentCheck, ...] = (app_exists, app_synced_healthy, resource_tree_healthy)
EXTRA: dict[CheckName, ComponentCheck] = {
    "argocd_api": argocd_api,
    "vault_health": vault_health,
    "certificates_ready": certificates_ready,
}


def run_component_checks(ctx: CheckContext, component: Component) -> list[CheckResult]:
    """Every check of the component runs, even after one fails or raises.

    A check that cannot run (Argo CD down, no Vault connection...) is a failed check with the
    reason, never a crash that hides the other checks' results.
    """
    results = []
    for check in (*ALWAYS, *(EXTRA[name] for name in component.checks)):
        try:
            results.append(check(ctx, component))
        except Exception as exc:
            results.append(_result(check.__name__, component, False, could_not_check(exc)))
    return results


def could_not_check(exc: Exception) -> str:
    message = exc.message if isinstance(exc, ArgoCDAPIError) else str(exc)
    return f"could not check: {type(exc).__name__}: {message}"

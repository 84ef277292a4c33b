"""Checks a component runs after its sync: what Argo CD reports about its live resources."""

from __future__ import annotations

from collections.abc import Callable

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.status import ResourceKey
from base_platform.catalog.models import CheckName, Component
from base_platform.checks.report import CheckResult, Severity

ComponentCheck = Callable[[ArgoCDHook, Component], CheckResult]


def argocd_api(hook: ArgoCDHook, component: Component) -> CheckResult:
    """The Argo CD API answers with its version."""
    try:
        version = hook.version().get("Version", "")
    except ArgoCDAPIError as exc:
        return CheckResult("argocd_api", component.name, False, f"API did not answer: {exc.message}")
    return CheckResult(
        "argocd_api", component.name, bool(version), f"Argo CD {version or 'returned no version'}"
    )


def _unhealthy(
    hook: ArgoCDHook, component: Component, kinds: set[str] | None = None
) -> tuple[int, list[str]]:
    nodes = hook.resource_tree(component.name).get("nodes") or []
    judged = [n for n in nodes if n.get("health") and (kinds is None or n.get("kind") in kinds)]
    bad = [
        f"{ResourceKey.from_dict(n)}: {n['health'].get('status')}"
        + (f": {n['health']['message']}" if n["health"].get("message") else "")
        for n in judged
        if n["health"].get("status") != "Healthy"
    ]
    return len(judged), bad


def resource_tree_healthy(hook: ArgoCDHook, component: Component) -> CheckResult:
    """Every resource with a health status in the app's resource tree is Healthy."""
    total, bad = _unhealthy(hook, component)
    if bad:
        return CheckResult(
            "resource_tree_healthy", component.name, False, f"{len(bad)} unhealthy: " + "; ".join(bad)
        )
    return CheckResult("resource_tree_healthy", component.name, True, f"{total} resources Healthy")


def certificates_ready(hook: ArgoCDHook, component: Component) -> CheckResult:
    """cert-manager's Certificates are Healthy (Ready)."""
    total, bad = _unhealthy(hook, component, {"Certificate"})
    if bad:
        return CheckResult("certificates_ready", component.name, False, "; ".join(bad))
    if total == 0:
        return CheckResult(
            "certificates_ready", component.name, False, "no Certificate found", Severity.WARNING
        )
    return CheckResult("certificates_ready", component.name, True, f"{total} Certificates Ready")


CHECKS: dict[CheckName, ComponentCheck] = {
    "argocd_api": argocd_api,
    "resource_tree_healthy": resource_tree_healthy,
    "certificates_ready": certificates_ready,
}


def run_component_checks(hook: ArgoCDHook, component: Component) -> list[CheckResult]:
    """Run every check of the component, even after one fails."""
    results = []
    for name in component.checks:
        try:
            results.append(CHECKS[name](hook, component))
        except ArgoCDAPIError as exc:
            results.append(CheckResult(name, component.name, False, f"Argo CD error: {exc}"))
    return results

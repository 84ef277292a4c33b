"""Security checks: they judge what a locked-down cluster really looks like.

Project and TLS rules are errors in staging and prod and warnings in dev, where the sandbox
runs wide open on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from base_platform.catalog.models import Wave
from base_platform.catalog.render import project_names, render_application, render_project
from base_platform.checks.component import could_not_check
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult, Severity
from base_platform.vault import client as vault

SCOPE = "security"
PLATFORM = "platform"
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[-_.]?key|private[-_.]?key|credential)", re.I)
# Values that point at a secret store rather than hold the secret.
REFERENCE = re.compile(r"^(vault:|<path:|\$\{|\{\{|ref\+|secretRef:|arn:aws:secretsmanager:)")
SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36}\b"
)
NOT_SECRET_VALUES = frozenset({"", "true", "false", "enabled", "disabled", "none", "null"})
INITIAL_ADMIN_SECRET = "argocd-initial-admin-secret"  # noqa: S105 (a Secret's name)

SecurityCheck = Callable[[CheckContext], list[CheckResult]]


def _hardened_severity(ctx: CheckContext) -> Severity:
    return Severity.ERROR if ctx.environment.hardened else Severity.WARNING


def no_default_project(ctx: CheckContext) -> list[CheckResult]:
    """No Application uses the catch-all project ``default``."""
    offenders = sorted(n for n, app in ctx.applications.items() if app["spec"].get("project") == "default")
    message = (
        f"in project default: {', '.join(offenders)}" if offenders else "no Application uses project default"
    )
    return [CheckResult("no_default_project", SCOPE, PLATFORM, not offenders, message)]


def _wide_open(project: dict[str, Any]) -> list[str]:
    spec = project.get("spec") or {}
    found = ["sourceRepos '*'"] if "*" in (spec.get("sourceRepos") or []) else []
    for dest in spec.get("destinations") or []:
        wild = [k for k in ("server", "namespace", "name") if dest.get(k) == "*"]
        if wild:
            found.append("destination " + ", ".join(f"{k}='*'" for k in wild))
    return found


def project_restrictions(ctx: CheckContext) -> list[CheckResult]:
    """No AppProject allows ``*`` as a destination or a source repository."""
    projects = ctx.hook.list_projects().get("items") or []
    results = []
    for project in projects:
        name = project["metadata"]["name"]
        found = _wide_open(project)
        message = "; ".join(sorted(set(found))) if found else "destinations and repositories are explicit"
        results.append(
            CheckResult(
                "project_restrictions", SCOPE, f"project/{name}", not found, message, _hardened_severity(ctx)
            )
        )
    return results


def vault_tls(ctx: CheckContext) -> list[CheckResult]:
    """Vault is reached over TLS."""
    if not ctx.environment.vault_enabled:
        return [
            CheckResult("vault_tls", SCOPE, "vault", True, f"Vault is not enabled in {ctx.environment.name}")
        ]
    url = vault.vault_url(ctx.vault_conn_id)
    tls = url.startswith("https://")
    message = f"Vault at {url} over {'TLS' if tls else 'plain HTTP'}"
    return [CheckResult("vault_tls", SCOPE, "vault", tls, message, _hardened_severity(ctx))]


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every scalar; a Helm ``{name, value}`` pair is keyed by its name."""
    if isinstance(node, dict):
        if set(node) >= {"name", "value"} and isinstance(node["name"], str):
            yield f"{path}[{node['name']}]", node["value"]
            return
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, node


def plaintext_secrets(document: Any) -> list[str]:
    """Where a document holds what looks like a secret in clear text (the value is never shown)."""
    found = []
    for path, value in _leaves(document):
        text = str(value).strip()
        key = path.rsplit(".", 1)[-1]
        if SECRET_VALUE.search(text):
            found.append(f"{path} holds key material")
        elif SECRET_KEY.search(key) and text.lower() not in NOT_SECRET_VALUES and not REFERENCE.match(text):
            found.append(f"{path} is set to a literal value")
    return found


def no_plaintext_secrets(ctx: CheckContext) -> list[CheckResult]:
    """No rendered Application or AppProject carries a plaintext secret."""
    env, catalog = ctx.environment, ctx.catalog
    documents = {f"application/{c.name}": render_application(c, env) for c in catalog.components}
    documents |= {f"project/{p}": render_project(p, catalog, env) for p in project_names(catalog)}
    found = [f"{where}: {hit}" for where, doc in documents.items() for hit in plaintext_secrets(doc)]
    message = "; ".join(found) if found else f"{len(documents)} rendered manifests, no plaintext secret"
    return [CheckResult("no_plaintext_secrets", SCOPE, "manifests", not found, message)]


def argocd_admin_disabled(ctx: CheckContext) -> list[CheckResult]:
    """Argo CD's admin account is disabled, or at least its initial password secret is gone."""
    accounts = {a.get("name"): a for a in ctx.hook.list_accounts().get("items") or []}
    admin = accounts.get("admin")
    if admin is None or not admin.get("enabled"):
        return [CheckResult("argocd_admin_disabled", SCOPE, "argocd", True, "the admin account is disabled")]
    nodes = (ctx.resource_tree("argocd").get("nodes") or []) if "argocd" in ctx.applications else []
    secret = any(n.get("kind") == "Secret" and n.get("name") == INITIAL_ADMIN_SECRET for n in nodes)
    if secret:
        message = f"the admin account is enabled and {INITIAL_ADMIN_SECRET} still exists"
        return [CheckResult("argocd_admin_disabled", SCOPE, "argocd", False, message)]
    message = f"the admin account is enabled, but {INITIAL_ADMIN_SECRET} is gone"
    return [CheckResult("argocd_admin_disabled", SCOPE, "argocd", True, message)]


def base_network_policies(ctx: CheckContext) -> list[CheckResult]:
    """Each BASE module's namespace has NetworkPolicies, as its resource tree shows."""
    results = []
    for component in ctx.catalog.in_waves({Wave.BASE}):
        target = f"{component.name} ({component.namespace})"
        if component.name not in ctx.applications:
            results.append(
                CheckResult("base_network_policies", SCOPE, target, False, "Application not found")
            )
            continue
        nodes = ctx.resource_tree(component.name).get("nodes") or []
        policies = sorted(
            n["name"]
            for n in nodes
            if n.get("kind") == "NetworkPolicy" and n.get("namespace") == component.namespace
        )
        message = (
            f"NetworkPolicies: {', '.join(policies)}" if policies else "no NetworkPolicy in the resource tree"
        )
        results.append(CheckResult("base_network_policies", SCOPE, target, bool(policies), message))
    return results


SECURITY_CHECKS: tuple[SecurityCheck, ...] = (
    no_default_project,
    project_restrictions,
    vault_tls,
    no_plaintext_secrets,
    argocd_admin_disabled,
    base_network_policies,
)


def run_security_checks(ctx: CheckContext) -> list[CheckResult]:
    """Every security check runs, even after one fails or raises."""
    results = []
    for check in SECURITY_CHECKS:
        try:
            results.extend(check(ctx))
        except Exception as exc:  # reported as a failed check, never hiding the others
            results.append(CheckResult(check.__name__, SCOPE, PLATFORM, False, could_not_check(exc)))
    return results

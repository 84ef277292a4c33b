"""Each validation check against simulator scenarios, and the verdict rule."""

from __future__ import annotations

import time

import httpx
import pytest

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog, load_environment
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult, Severity, Verdict, verdict
from base_platform.checks.security import plaintext_secrets
from base_platform.checks.suite import run_scope, scopes_of
from tests.conftest import vault_conn_uri
from tests.scenarios import NETWORK_POLICY, WORKLOAD

INITIAL_SECRET = {"kind": "Secret", "name": "argocd-initial-admin-secret"}


def _context(environment: str = "dev", revision: str = "") -> CheckContext:
    return CheckContext(ArgoCDHook(), default_catalog(), load_environment(environment), revision)


def _run(scope: str = "all", environment: str = "dev") -> list[CheckResult]:
    ctx = _context(environment)
    return [r for s in scopes_of(scope) for r in run_scope(ctx, s)]


def _failed(results: list[CheckResult]) -> dict[tuple[str, str], CheckResult]:
    return {(r.name, r.target): r for r in results if not r.passed}


# ---- the verdict rule -----------------------------------------------------------------------
def _r(scope: str, passed: bool, severity: Severity = Severity.ERROR) -> CheckResult:
    return CheckResult("c", scope, "t", passed, "m", severity)


def test_verdict_healthy_ignores_failed_warnings() -> None:
    assert verdict([_r("apps", True), _r("security", False, Severity.WARNING)]) is Verdict.HEALTHY


def test_verdict_degraded_needs_80_percent_and_no_core_or_security_error() -> None:
    four_of_five = [_r("apps", True)] * 4 + [_r("apps", False)]
    assert verdict(four_of_five) is Verdict.DEGRADED
    assert verdict([_r("apps", True)] * 3 + [_r("apps", False)] * 2) is Verdict.FAILED
    assert verdict([_r("apps", True)] * 9 + [_r("core", False)]) is Verdict.FAILED
    assert verdict([_r("apps", True)] * 9 + [_r("security", False)]) is Verdict.FAILED


# ---- a healthy platform ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_deployed_locked_down_platform_is_healthy(platform) -> None:
    platform()
    results = _run()
    assert verdict(results) is Verdict.HEALTHY, [r.line() for r in results if not r.passed]
    names = {r.name for r in results}
    assert names >= {
        "app_exists",
        "app_synced_healthy",
        "resource_tree_healthy",
        "argocd_api",
        "vault_health",
        "certificates_ready",
        "no_default_project",
        "project_restrictions",
        "vault_tls",
        "no_plaintext_secrets",
        "argocd_admin_disabled",
        "base_network_policies",
    }
    assert len([r for r in results if r.name == "app_exists"]) == 28
    # dev reaches the Vault simulator over HTTP: a warning there, an error in staging and prod
    assert [r.line() for r in results if not r.passed] == [
        f"[WARN] security/vault/vault_tls: Vault at {results_vault_url(results)} over plain HTTP"
    ]


def results_vault_url(results: list[CheckResult]) -> str:
    message = next(r.message for r in results if r.name == "vault_tls")
    return message.removeprefix("Vault at ").removesuffix(" over plain HTTP")


# ---- per component --------------------------------------------------------------------------
@pytest.mark.slow
def test_missing_app_wrong_revision_and_unhealthy_resources_are_named(platform) -> None:
    platform(omit=("logging",), monitoring={"outcome": "Degraded"})
    hook = ArgoCDHook()
    hook.sync_application("monitoring", revision="main")
    spec = hook.get_application("service-mesh")
    spec["spec"]["source"]["targetRevision"] = "v1.2.0"
    hook.upsert_application({"metadata": {"name": "service-mesh"}, "spec": spec["spec"]})
    time.sleep(1.0)
    failed = _failed(_run("shared"))
    assert failed[("app_exists", "logging")].message == "Application not found in Argo CD"
    assert "tracks 'v1.2.0', not 'main'" in failed[("app_synced_healthy", "service-mesh")].message
    tree = failed[("resource_tree_healthy", "monitoring")].message
    assert "apps/Deployment" in tree and "monitoring" in tree and "exceeded its progress deadline" in tree
    assert "not Healthy" in failed[("app_synced_healthy", "monitoring")].message


@pytest.mark.slow
def test_a_sealed_vault_fails_core_with_that_message(platform) -> None:
    _, vault = platform()
    httpx.post(f"{vault.url}/sandbox/seal", json={"sealed": True}).raise_for_status()
    results = _run("core")
    failed = _failed(results)
    assert failed[("vault_health", "vault")].message.endswith("is sealed")
    assert failed[("vault_health", "vault")].scope == "core"
    assert verdict(results) is Verdict.FAILED


def test_argocd_api_down_fails_every_argocd_check_without_stopping_the_others(platform) -> None:
    sim, _ = platform()
    sim.inject("/api/", 400, count=200, message="injected: Argo CD unavailable")
    results = _run("core")
    assert len(results) == 4 * 3 + 3  # every check still reported
    assert _failed(results)[("argocd_api", "argocd")].message.startswith("could not check")
    assert ("vault_health", "vault") not in _failed(results)


# ---- security -------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_app_in_the_default_project_fails_security(platform) -> None:
    platform()
    ArgoCDHook().upsert_application(
        {"metadata": {"name": "stray"}, "spec": {"project": "default", "source": {"repoURL": "https://g/x"}}}
    )
    failed = _failed(_run("security"))
    assert failed[("no_default_project", "platform")].message == "in project default: stray"


@pytest.mark.parametrize(("environment", "mark"), [("dev", "WARN"), ("staging", "FAIL")])
@pytest.mark.slow
def test_wildcard_projects_and_plain_http_vault_are_errors_outside_dev(platform, environment, mark) -> None:
    platform(environment)
    ArgoCDHook().upsert_project(
        {
            "metadata": {"name": "wide"},
            "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "x"}]},
        }
    )
    failed = _failed(_run("security", environment))
    wide = failed[("project_restrictions", "project/wide")]
    assert wide.mark == mark and wide.message == "destination server='*'; sourceRepos '*'"
    assert failed[("vault_tls", "vault")].mark == mark


@pytest.mark.slow
def test_vault_over_tls_passes(platform, monkeypatch) -> None:
    platform("staging")
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", vault_conn_uri(8200, tls=True))
    result = next(r for r in _run("security", "staging") if r.name == "vault_tls")
    assert result.passed and result.message == "Vault at https://127.0.0.1:8200 over TLS"


def test_plaintext_secrets_are_found_without_echoing_them() -> None:
    document = {
        "spec": {
            "source": {
                "helm": {
                    "parameters": [
                        {"name": "db.password", "value": "hunter2"},
                        {"name": "db.passwordRef", "value": "vault:secret/data/db#password"},
                        {"name": "admin.enabled", "value": "false"},
                        {"name": "tls.key", "value": "-----BEGIN RSA " + "PRIVATE KEY-----\nabc"},
                    ]
                }
            },
            "env": {"API_TOKEN": "${API_TOKEN}", "AWS": "AKIA" + "ABCDEFGHIJKLMNOP"},
        }
    }
    found = plaintext_secrets(document)
    assert found == [
        "spec.source.helm.parameters[0][db.password] is set to a literal value",
        "spec.source.helm.parameters[3][tls.key] holds key material",
        "spec.env.AWS holds key material",
    ]
    assert not any("hunter2" in f for f in found)


@pytest.mark.parametrize(("resources", "passed"), [([*WORKLOAD, INITIAL_SECRET], False), (WORKLOAD, True)])
@pytest.mark.slow
def test_an_enabled_admin_passes_only_once_its_initial_secret_is_gone(platform, resources, passed) -> None:
    platform(top={"disabled_accounts": []}, argocd={"resources": resources})
    result = next(r for r in _run("security") if r.name == "argocd_admin_disabled")
    assert result.passed is passed
    assert result.message.startswith("the admin account is enabled")


@pytest.mark.slow
def test_base_module_without_network_policies_fails(platform) -> None:
    platform(data_quality={"resources": WORKLOAD})
    failed = _failed(_run("security"))
    assert set(failed) == {
        ("base_network_policies", "data-quality (base-data-quality)"),
        ("vault_tls", "vault"),
    }
    assert failed[("base_network_policies", "data-quality (base-data-quality)")].message == (
        "no NetworkPolicy in the resource tree"
    )
    assert NETWORK_POLICY["name"] in next(
        r.message for r in _run("security") if r.target.startswith("data-ingestion")
    )

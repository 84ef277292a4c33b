"""What platform_deploy's summary says, from task states and outcomes: plain functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import load_catalog
from base_platform.deploy.tasks import (
    DeployError,
    bootstrap,
    component_report,
    format_report,
    plan_run,
    summarize_deploy,
)
from tests.scenarios import deployed_platform

CATALOG = load_catalog()


class NoArgoCD:
    """The summary reads each app from Argo CD; these tests judge task states only."""

    def find_application(self, name: str) -> None:
        return None


def test_verdicts_from_state_and_outcome() -> None:
    assert component_report("vault", "success", {}, None, None)["verdict"] == "deployed"
    failed = component_report(
        "vault", "failed", {"failure": "sync Failed: boom", "rolled_back": True}, None, None
    )
    assert failed["verdict"] == "failed: sync Failed: boom" and failed["rolled_back"] and not failed["ok"]
    assert component_report("logging", "upstream_failed", None, None, None)["verdict"] == (
        "blocked by a failed dependency"
    )
    assert component_report("logging", "upstream_failed", None, None, "core")["verdict"] == (
        "stopped by the failed core gate"
    )
    dry = component_report("vault", "success", {"dry_run": True, "verdict": "would be created"}, None, None)
    assert dry["verdict"] == "dry run: would be created" and dry["ok"]


def test_the_summary_names_the_gate_that_stopped_the_rollout() -> None:
    planned: dict[str, Any] = {
        "environment": "dev",
        "revision": "main",
        "dry_run": False,
        "selected": ["argocd", "vault", "monitoring"],
    }
    states = {
        "core.argocd": "success",
        "core.vault": "success",
        "core.gate": "failed",
        "shared.monitoring": "upstream_failed",
        "shared.gate": "upstream_failed",
    }
    report = summarize_deploy(CATALOG, planned, states, {}, NoArgoCD())  # type: ignore[arg-type]
    assert report["stopped_by_gate"] == "core" and not report["ok"]
    rows = {r["component"]: r["verdict"] for r in report["components"]}
    assert rows == {
        "argocd": "deployed",
        "vault": "deployed",
        "monitoring": "stopped by the failed core gate",
    }
    assert "rollout stopped by the failed gate of wave core" in format_report(report)


def test_a_partial_deploy_refuses_dependencies_that_are_not_running(
    start_simulator: Callable[..., Any],
) -> None:
    start_simulator(deployed_platform(omit=("monitoring",)))
    with ArgoCDHook() as hook:
        with pytest.raises(DeployError, match=r"not Synced and Healthy: monitoring \(not found\)"):
            plan_run(CATALOG, {"environment": "dev", "waves": ["apps"]}, hook)
        planned = plan_run(
            CATALOG, {"environment": "dev", "waves": ["shared"], "target_revision": "r1"}, hook
        )
    assert planned["revision"] == "r1" and planned["environment"] == "dev" and not planned["dry_run"]
    assert set(planned["selected"]) == {c.name for c in CATALOG.components if c.wave.value == "shared"}


def test_bootstrap_writes_the_projects_unless_it_is_a_dry_run(start_simulator: Callable[..., Any]) -> None:
    start_simulator(deployed_platform())
    with ArgoCDHook() as hook:

        def destinations() -> dict[str, Any]:
            projects = hook.list_projects().get("items") or []
            return {p["metadata"]["name"]: p["spec"]["destinations"] for p in projects}

        wide_open = destinations()  # Argo CD made a project for each app that named one: anything goes
        dry = bootstrap(CATALOG, "dev", hook, dry_run=True)
        assert destinations() == wide_open
        done = bootstrap(CATALOG, "dev", hook, dry_run=False)
        locked = destinations()
    assert done["projects"] == dry["projects"] and set(done["projects"]) <= set(locked)
    for name in done["projects"]:
        assert locked[name] and {"server": "*", "namespace": "*"} not in locked[name]

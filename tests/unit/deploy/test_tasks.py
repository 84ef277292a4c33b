"""What platform_deploy's summary says, from task states and outcomes: plain functions."""

from __future__ import annotations

from typing import Any

from base_platform.catalog.loader import load_catalog
from base_platform.deploy.tasks import component_report, format_report, summarize

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
    report = summarize(CATALOG, planned, states, {}, NoArgoCD())  # type: ignore[arg-type]
    assert report["stopped_by_gate"] == "core" and not report["ok"]
    rows = {r["component"]: r["verdict"] for r in report["components"]}
    assert rows == {
        "argocd": "deployed",
        "vault": "deployed",
        "monitoring": "stopped by the failed core gate",
    }
    assert "rollout stopped by the failed gate of wave core" in format_report(report)

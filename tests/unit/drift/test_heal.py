"""Healing as plain functions: which findings it acts on, and what one heal does against Argo CD."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog, environment
from base_platform.catalog.models import DriftPolicy
from base_platform.catalog.render import render_application
from base_platform.drift.compare import Finding
from base_platform.drift.heal import heal, heal_targets
from tests.scenarios import deployed_platform, install_projects

FINDINGS = [
    Finding("monitoring", "revision", "at v0, wants v1"),
    Finding("logging", "spec", "helm values differ"),
    Finding("vault", "health", "Degraded"),  # a sync cannot fix health: never healed
    Finding("mlflow", "out_of_sync", "OutOfSync"),
    Finding("mlflow", "pinned", "pinned by rollback run r1"),  # a rollback's pin wins over drift
]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (DriftPolicy(), []),
        (DriftPolicy(heal="none", heal_allowlist=("monitoring",)), []),
        (DriftPolicy(heal="sync-allowlisted"), []),
        (
            DriftPolicy(heal="sync-allowlisted", heal_allowlist=("monitoring", "vault", "mlflow")),
            ["monitoring"],
        ),
        (
            DriftPolicy(heal="sync-allowlisted", heal_allowlist=("logging", "monitoring")),
            ["logging", "monitoring"],
        ),
    ],
)
def test_heal_targets_are_allowlisted_sync_fixable_and_not_pinned(
    policy: DriftPolicy, expected: list[str]
) -> None:
    assert heal_targets(FINDINGS, policy) == expected


def desired(name: str) -> dict[str, Any]:
    return render_application(default_catalog().component(name), environment("dev"))


def drift(hook: ArgoCDHook, name: str, revision: str) -> None:
    """Someone changed the app by hand: a different targetRevision, synced."""
    changed = copy.deepcopy(desired(name))
    changed["spec"]["source"]["targetRevision"] = revision
    hook.upsert_application(changed)


@pytest.mark.slow
def test_heal_puts_the_declared_spec_back_and_waits_for_its_sync(start_simulator: Callable[..., Any]) -> None:
    start_simulator(deployed_platform())
    install_projects()
    wanted = desired("monitoring")
    with ArgoCDHook() as hook:
        drift(hook, "monitoring", "hand-edited")
        outcome = heal(hook, "monitoring", wanted, timeout=30, poll=0.1)
        live = hook.get_application("monitoring")
    assert outcome["outcome"] == "healed", outcome
    assert outcome["action"] == f"upsert and sync to {wanted['spec']['source']['targetRevision']}"
    assert live["spec"]["source"] == wanted["spec"]["source"]
    assert live["status"]["sync"]["status"] == "Synced" and live["status"]["health"]["status"] == "Healthy"


@pytest.mark.slow
def test_a_heal_whose_sync_fails_says_so_and_does_not_raise(start_simulator: Callable[..., Any]) -> None:
    revision = desired("monitoring")["spec"]["source"]["targetRevision"]
    start_simulator(deployed_platform(monitoring={"outcome_by_revision": {revision: "SyncFailed"}}))
    install_projects()
    with ArgoCDHook() as hook:
        drift(hook, "monitoring", "hand-edited")
        outcome = heal(hook, "monitoring", desired("monitoring"), timeout=30, poll=0.1)
    assert outcome["outcome"].startswith("not healed: "), outcome


def test_a_heal_argo_cd_refuses_is_reported_not_raised(start_simulator: Callable[..., Any]) -> None:
    start_simulator(deployed_platform())
    wanted = desired("monitoring")
    wanted["spec"]["project"] = "no-such-project"  # Argo CD refuses the upsert: a permanent error
    with ArgoCDHook() as hook:
        outcome = heal(hook, "monitoring", wanted, timeout=30, poll=0.1)
    assert outcome["action"] == "sync" and outcome["outcome"].startswith("failed: "), outcome

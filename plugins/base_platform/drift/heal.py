"""Healing per the overlay's policy: ``none``, or ``sync-allowlisted`` (sync only the apps the
overlay names, and only for drift a sync can fix). An app a rollback pinned is never healed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from base_platform.argocd.actions import start_sync, wait_until_done
from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.catalog.models import DriftPolicy
from base_platform.drift.compare import Finding
from base_platform.types import JSON

HEALABLE = frozenset({"out_of_sync", "revision", "spec"})


def heal_targets(findings: Sequence[Finding], policy: DriftPolicy) -> list[str]:
    if policy.heal == "none":
        return []
    pinned = {f.app for f in findings if f.kind == "pinned"}
    drifted = {f.app for f in findings if f.kind in HEALABLE}
    return sorted((drifted - pinned) & set(policy.heal_allowlist))


def heal(hook: ArgoCDHook, name: str, desired: JSON, timeout: float, poll: float) -> dict[str, Any]:
    """Put the declared spec back, sync it, and wait for the verdict on that sync."""
    revision = desired["spec"]["source"].get("targetRevision")
    try:
        hook.upsert_application(desired)
        started = start_sync(hook, name, revision=revision)
    except ArgoCDAPIError as exc:
        return {"app": name, "action": "sync", "outcome": f"failed: {exc.message}"}
    verdict = wait_until_done(hook, name, started.wait_spec(), timeout, poll)
    outcome = "healed" if verdict.done else f"not healed: {verdict.reason}"
    return {"app": name, "action": f"upsert and sync to {revision}", "outcome": outcome}

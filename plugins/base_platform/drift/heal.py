"""Healing per the overlay's policy: ``none``, or ``sync-allowlisted`` (sync only the apps the
overlay names, and only for drift a sync can fix)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from base_platform.argocd.hooks import ArgoCDAPIError, ArgoCDHook
from base_platform.argocd.operators import request_time, wait_until_done
from base_platform.argocd.status import WaitSpec
from base_platform.catalog.models import DriftPolicy
from base_platform.drift.compare import JSON, Finding

HEALABLE = frozenset({"out_of_sync", "revision", "spec"})


def heal_targets(findings: Sequence[Finding], policy: DriftPolicy) -> list[str]:
    if policy.heal == "none":
        return []
    drifted = {f.app for f in findings if f.kind in HEALABLE}
    return sorted(drifted & set(policy.heal_allowlist))


def heal(hook: ArgoCDHook, name: str, desired: JSON, timeout: float, poll: float) -> dict[str, Any]:
    """Put the declared spec back, sync it, and wait for the verdict."""
    try:
        hook.upsert_application(desired)
        requested_at = request_time()
        revision = desired["spec"]["source"].get("targetRevision")
        hook.sync_application(name, revision=revision)
    except ArgoCDAPIError as exc:
        return {"app": name, "action": "sync", "outcome": f"failed: {exc.message}"}
    spec = WaitSpec(requested_at=datetime.fromisoformat(requested_at))
    verdict = wait_until_done(hook, name, spec, timeout, poll)
    outcome = "healed" if verdict.done else f"not healed: {verdict.reason}"
    return {"app": name, "action": f"upsert and sync to {revision}", "outcome": outcome}

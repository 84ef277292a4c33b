"""Compare what the catalog wants with what Argo CD runs. Pure: no I/O here.

Kinds of finding: ``missing`` (declared, not in Argo CD), ``orphan`` (in Argo CD, not
declared), ``revision`` (tracks another revision), ``spec`` (other source or destination),
``out_of_sync`` (live resources differ from Git, with the fields that differ), ``health``, and
``pinned``: a rollback pinned the app, so its differences from Git are intended until the
next deploy of it, and nothing heals it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from base_platform.argocd.application import parse_pin, spec_changes
from base_platform.argocd.status import describe
from base_platform.types import JSON

REDACTED = "<redacted>"
# Argo CD's own bookkeeping, not drift.
IGNORED_SPEC = frozenset({"spec.source.targetRevision", "spec.syncPolicy.retry", "spec.revisionHistoryLimit"})


@dataclass(frozen=True)
class Finding:
    app: str
    kind: str
    message: str
    resources: list[JSON] = field(default_factory=list)

    def to_dict(self) -> JSON:
        return asdict(self)


def _flatten(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key in sorted(node):
            yield from _flatten(node[key], f"{path}.{key}" if path else str(key))
    else:
        yield path, node


def _state(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def field_diffs(live: Any, target: Any, redact: bool = False) -> list[JSON]:
    """Dotted paths whose values differ between the live and the target manifest."""
    live_fields, target_fields = dict(_flatten(live or {})), dict(_flatten(target or {}))
    rows = []
    for path in sorted(live_fields.keys() | target_fields.keys()):
        if path == "metadata.labels.platform.base/revision" or live_fields.get(path) == target_fields.get(
            path
        ):
            continue
        shown = (REDACTED, REDACTED) if redact else (live_fields.get(path), target_fields.get(path))
        rows.append({"path": path, "live": shown[0], "target": shown[1]})
    return rows


def resource_diffs(managed: Mapping[str, Any]) -> list[JSON]:
    """From ``managed-resources``: each modified resource and which fields differ.

    Compares what Argo CD would apply (``predictedLiveState``, else ``targetState``) with the
    normalised live state. Values of Secrets are never shown.
    """
    rows: list[JSON] = []
    for item in managed.get("items") or []:
        if not item.get("modified"):
            continue
        live = _state(item.get("normalizedLiveState") or item.get("liveState"))
        target = _state(item.get("predictedLiveState") or item.get("targetState"))
        resource = "/".join(str(item.get(k) or "") for k in ("group", "kind", "namespace", "name"))
        if live is None or target is None:
            rows.append(
                {"resource": resource, "fields": [], "note": "missing live" if live is None else "not in Git"}
            )
            continue
        rows.append(
            {"resource": resource, "fields": field_diffs(live, target, redact=item.get("kind") == "Secret")}
        )
    return rows


def compare_app(name: str, desired: JSON, live: JSON, managed: Callable[[str], JSON]) -> list[Finding]:
    """Findings for one declared app that exists in Argo CD."""
    findings = []
    pin = parse_pin(live)
    if pin is not None:
        message = (
            f"pinned by rollback at {pin.get('at')}, revision {pin.get('revision')} "
            f"(history {pin.get('history')}); the next platform_deploy of {name} clears the pin"
        )
        findings.append(Finding(name, "pinned", message))
        if live.get("status", {}).get("health", {}).get("status") != "Healthy":
            findings.append(Finding(name, "health", describe(live)))
        return findings
    wanted = desired["spec"]["source"].get("targetRevision")
    tracked = live.get("spec", {}).get("source", {}).get("targetRevision")
    if tracked != wanted:
        findings.append(Finding(name, "revision", f"tracks {tracked!r}, desired {wanted!r}"))
    changed = [p for p in spec_changes(live.get("spec"), desired["spec"]) if p not in IGNORED_SPEC]
    if changed:
        findings.append(Finding(name, "spec", "differs from the rendered manifest at " + ", ".join(changed)))
    status = live.get("status", {})
    if status.get("sync", {}).get("status") == "OutOfSync":
        diffs = resource_diffs(managed(name))
        what = ", ".join(d["resource"] for d in diffs) or "no resource reported as modified"
        findings.append(Finding(name, "out_of_sync", f"OutOfSync: {what}", diffs))
    if status.get("health", {}).get("status") != "Healthy":
        findings.append(Finding(name, "health", describe(live)))
    return findings


def compare(
    desired: Mapping[str, JSON], live: Mapping[str, JSON], managed: Callable[[str], JSON]
) -> list[Finding]:
    """All findings, declared apps in catalog order, then orphans by name."""
    findings: list[Finding] = []
    for name, app in desired.items():
        if name not in live:
            findings.append(Finding(name, "missing", "declared in the catalog, not in Argo CD"))
        else:
            findings.extend(compare_app(name, app, live[name], managed))
    for name in sorted(live.keys() - desired.keys()):
        project = live[name].get("spec", {}).get("project")
        findings.append(Finding(name, "orphan", f"in Argo CD (project {project}), not in the catalog"))
    return findings

"""Drift comparison and heal policy as pure functions."""

from __future__ import annotations

import json

from base_platform.catalog.models import DriftPolicy
from base_platform.drift.compare import Finding, compare, field_diffs, resource_diffs
from base_platform.drift.heal import heal_targets

DESIRED = {
    "spec": {
        "project": "p",
        "source": {"repoURL": "https://g/x", "targetRevision": "main", "path": "charts/a"},
        "destination": {"server": "https://k", "namespace": "a"},
    }
}


def _live(**status: object) -> dict:
    return {
        "spec": json.loads(json.dumps(DESIRED["spec"])),
        "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}} | status,
    }


def test_an_app_as_declared_has_no_findings() -> None:
    assert compare({"a": DESIRED}, {"a": _live()}, lambda name: {"items": []}) == []


def test_missing_orphan_revision_spec_and_health() -> None:
    live = _live(health={"status": "Degraded"})
    live["spec"]["source"]["targetRevision"] = "v1"
    live["spec"]["destination"]["namespace"] = "elsewhere"
    findings = compare({"a": DESIRED, "b": DESIRED}, {"a": live, "zz": _live()}, lambda name: {"items": []})
    assert [(f.app, f.kind) for f in findings] == [
        ("a", "revision"),
        ("a", "spec"),
        ("a", "health"),
        ("b", "missing"),
        ("zz", "orphan"),
    ]
    assert findings[1].message == "differs from the rendered manifest at spec.destination.namespace"


def test_field_diffs_name_paths_both_ways() -> None:
    live = {"spec": {"replicas": 5, "template": {"image": "a:1"}}, "extra": True}
    target = {"spec": {"replicas": 2, "template": {"image": "a:1"}}}
    assert field_diffs(live, target) == [
        {"path": "extra", "live": True, "target": None},
        {"path": "spec.replicas", "live": 5, "target": 2},
    ]


def test_secret_values_are_redacted_and_absent_sides_are_named() -> None:
    managed = {
        "items": [
            {
                "kind": "Secret",
                "name": "s",
                "namespace": "n",
                "group": "",
                "modified": True,
                "liveState": json.dumps({"data": {"k": "bGl2ZQ=="}}),
                "targetState": json.dumps({"data": {"k": "dGFyZ2V0"}}),
            },
            {
                "kind": "ConfigMap",
                "name": "c",
                "namespace": "n",
                "group": "",
                "modified": True,
                "liveState": "null",
                "targetState": json.dumps({"data": {}}),
            },
            {"kind": "Service", "name": "ok", "namespace": "n", "group": "", "modified": False},
        ]
    }
    assert resource_diffs(managed) == [
        {
            "resource": "/Secret/n/s",
            "fields": [{"path": "data.k", "live": "<redacted>", "target": "<redacted>"}],
        },
        {"resource": "/ConfigMap/n/c", "fields": [], "note": "missing live"},
    ]


def test_heal_targets_follow_the_policy() -> None:
    findings = [
        Finding("a", "out_of_sync", ""),
        Finding("b", "revision", ""),
        Finding("c", "missing", ""),
        Finding("d", "health", ""),
    ]
    assert heal_targets(findings, DriftPolicy()) == []
    policy = DriftPolicy(heal="sync-allowlisted", heal_allowlist=("a", "c", "d"))
    assert heal_targets(findings, policy) == ["a"]


def test_an_app_pinned_by_rollback_is_reported_as_pinned_and_never_healed() -> None:
    from base_platform.argocd.application import PIN_ANNOTATION
    from base_platform.catalog.models import DriftPolicy
    from base_platform.drift.compare import compare_app
    from base_platform.drift.heal import heal_targets

    desired = {"spec": {"source": {"targetRevision": "main"}, "project": "p"}}
    live = {
        "metadata": {"annotations": {PIN_ANNOTATION: "at=2026-11-28T02:00:00+00:00 history=3 revision=abc"}},
        "spec": {"source": {"targetRevision": "v1"}, "project": "p"},
        "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"}},
    }
    findings = compare_app("monitoring", desired, live, lambda name: {"items": []})
    assert [f.kind for f in findings] == ["pinned"]
    assert findings[0].message.startswith("pinned by rollback at 2026-11-28T02:00:00+00:00, revision abc")
    policy = DriftPolicy(heal="sync-allowlisted", heal_allowlist=("monitoring",))
    assert heal_targets(findings, policy) == []

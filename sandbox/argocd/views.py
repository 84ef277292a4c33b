"""JSON views of simulated objects, shaped like argocd-swagger.json's definitions."""

from __future__ import annotations

import json
from typing import Any

from sandbox.argocd.scenario import Resource
from sandbox.argocd.state import JSON, Operation, SimApp, ts

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Rollout", "Job"})


def _resource_health(app: SimApp, resource: Resource) -> JSON | None:
    if app.live_health == "Missing":
        return {"status": "Missing"}
    if resource.kind not in WORKLOAD_KINDS:
        return {"status": "Healthy"} if resource.kind in {"Service", "Certificate", "Ingress"} else None
    if app.live_health == "Degraded":
        return {
            "status": "Degraded",
            "message": f'Deployment "{resource.name}" exceeded its progress deadline',
        }
    if app.live_health == "Progressing":
        return {
            "status": "Progressing",
            "message": "Waiting for rollout to finish: 0 of 2 updated replicas are available...",
        }
    return {"status": app.live_health}


def _ref(app: SimApp, resource: Resource) -> JSON:
    return {
        "group": resource.group,
        "version": resource.version,
        "kind": resource.kind,
        "namespace": app.namespace,
        "name": resource.name,
    }


def resource_statuses(app: SimApp) -> list[JSON]:
    statuses = []
    for resource in app.resources:
        entry = _ref(app, resource) | {"status": "OutOfSync" if app.drift_of(resource) else app.live_sync}
        health = _resource_health(app, resource)
        if health:
            entry["health"] = health
        statuses.append(entry)
    return statuses


def _operation_state(app: SimApp, op: Operation, now: float) -> JSON:
    state: JSON = {
        "operation": _operation(op),
        "startedAt": ts(op.started),
        "phase": "Terminating" if op.terminated_at and not op.settled else "Running",
        "message": "one or more tasks are running",
    }
    if not op.settled:
        return state
    end = op.terminated_at or op.started + app.behaviour.sync_seconds
    failed = bool(op.terminated_at) or (
        app.behaviour.outcome_for(op.requested) == "SyncFailed" and not op.dry_run
    )
    result_status = "SyncFailed" if failed else "Synced"
    suffix = " (dry run)" if op.dry_run else ""
    results = [
        _ref(app, r)
        | {
            "status": result_status,
            "message": (
                f"error validating {r.kind} {r.name}: admission webhook denied the request"
                if failed
                else f"{r.kind.lower()}/{r.name} configured{suffix}"
            ),
            "syncPhase": "Sync",
            "hookPhase": "Failed" if failed else "Succeeded",
        }
        for r in app.resources
    ]
    if op.terminated_at:
        message = "Operation terminated"
    elif failed:
        message = "one or more objects failed to apply, reason: admission webhook denied the request"
    else:
        message = "successfully synced (all tasks run)"
    state.update(
        phase="Failed" if failed else "Succeeded",
        message=message,
        finishedAt=ts(end),
        syncResult={"revision": op.revision, "resources": results, "source": app.spec.get("source", {})},
    )
    return state


def application(app: SimApp, now: float) -> JSON:
    """The Application as ``GET /api/v1/applications/{name}`` returns it."""
    health: JSON = {"status": app.live_health}
    if app.live_health == "Degraded":
        health["message"] = "one or more resources are Degraded"
    status: JSON = {
        "sync": {
            "status": app.sync_status,
            "revision": app.live_revision or "",
            "comparedTo": {
                "source": app.spec.get("source", {}),
                "destination": app.spec.get("destination", {}),
            },
        },
        "health": health,
        "history": list(app.history),
        "resources": resource_statuses(app),
        "sourceType": "Directory",
        "summary": {},
        "controllerNamespace": "argocd",
    }
    if app.reconciled is not None:
        status["reconciledAt"] = ts(app.reconciled)
    metadata: JSON = {
        "name": app.name,
        "namespace": "argocd",
        "uid": app.uid,
        "generation": app.generation,
        "resourceVersion": str(int(now * 1000)),
        "creationTimestamp": ts(app.created),
    }
    if app.labels:
        metadata["labels"] = dict(app.labels)
    if app.annotations:
        metadata["annotations"] = dict(app.annotations)
    if app.deletion_requested is not None:
        metadata["deletionTimestamp"] = ts(app.deletion_requested)
        metadata["finalizers"] = ["resources-finalizer.argocd.argoproj.io"]
    body: JSON = {"metadata": metadata, "spec": app.spec, "status": status}
    op = app.operation
    if op is not None:
        status["operationState"] = _operation_state(app, op, now)
        if not op.settled:
            body["operation"] = _operation(op)
    return body


def _operation(op: Operation) -> JSON:
    """The Operation as requested; ``operationState.operation`` is a copy of it, as in Argo CD."""
    operation: JSON = {
        "sync": {"revision": op.revision, "dryRun": op.dry_run, "prune": op.prune},
        "initiatedBy": {"username": "admin"},
    }
    if op.info:
        operation["info"] = [dict(item) for item in op.info]
    return operation


def resource_tree(app: SimApp) -> JSON:
    nodes: list[JSON] = []
    for resource in app.resources:
        node = _ref(app, resource) | {"uid": f"{app.uid}-{resource.kind}", "resourceVersion": "1"}
        health = _resource_health(app, resource)
        if health:
            node["health"] = health
        nodes.append(node)
        if resource.kind == "Deployment" and app.live_health != "Missing":
            rs = {
                "group": "apps",
                "version": "v1",
                "kind": "ReplicaSet",
                "namespace": app.namespace,
                "name": f"{resource.name}-5d8f7c9b6",
                "uid": f"{app.uid}-rs",
                "parentRefs": [node_ref(node)],
            }
            pod = {
                "group": "",
                "version": "v1",
                "kind": "Pod",
                "namespace": app.namespace,
                "name": f"{resource.name}-5d8f7c9b6-x2x7k",
                "uid": f"{app.uid}-pod",
                "parentRefs": [node_ref(rs)],
                "health": health or {"status": "Healthy"},
            }
            nodes.extend([rs, pod])
    return {"nodes": nodes, "orphanedNodes": [], "hosts": []}


def node_ref(node: JSON) -> JSON:
    return {k: node[k] for k in ("group", "kind", "namespace", "name", "uid")}


def _manifest(app: SimApp, resource: Resource, revision: str | None) -> JSON:
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    labels = {"app.kubernetes.io/instance": app.name}
    if revision:
        labels["platform.base/revision"] = revision[:12]
    return {
        "apiVersion": api_version,
        "kind": resource.kind,
        "metadata": {"name": resource.name, "namespace": app.namespace, "labels": labels},
    }


def _merge(base: JSON, patch: dict[str, Any]) -> JSON:
    merged = dict(base)
    for key, value in patch.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def managed_resources(app: SimApp) -> JSON:
    target_revision = app.operation.revision if app.operation else app.live_revision
    items = []
    for resource in app.resources:
        target_manifest = _manifest(app, resource, target_revision)
        live: Any = _manifest(app, resource, app.live_revision) if app.live_revision else None
        drift = app.drift_of(resource)
        if drift is not None and live is not None:
            target_manifest, live = _merge(target_manifest, drift.target), _merge(live, drift.live)
        target = json.dumps(target_manifest)
        live_json = json.dumps(live)
        items.append(
            {k: v for k, v in _ref(app, resource).items() if k != "version"}
            | {
                "targetState": target,
                "liveState": live_json,
                "normalizedLiveState": live_json,
                "predictedLiveState": target,
                "modified": live_json != target,
            }
        )
    return {"items": items}


def events(app: SimApp) -> JSON:
    items = []
    for entry in app.history:
        items.append(
            {
                "metadata": {"name": f"{app.name}.{entry['id']}", "namespace": "argocd"},
                "involvedObject": {
                    "kind": "Application",
                    "name": app.name,
                    "namespace": "argocd",
                    "uid": app.uid,
                },
                "reason": "OperationCompleted",
                "message": f"Sync operation to {entry['revision']} succeeded",
                "type": "Normal",
                "count": 1,
                "firstTimestamp": entry["deployedAt"],
                "lastTimestamp": entry["deployedAt"],
            }
        )
    return {"metadata": {}, "items": items}

"""State of the simulated Argo CD: Applications, AppProjects and their operations.

Time drives everything: an operation is a start time plus the app's behaviour, and each
request first calls :meth:`Store.advance` to settle what has finished by now. No threads.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.argocd.scenario import Behaviour, Drift, Resource, Scenario

JSON = dict[str, Any]
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_RESOURCES = (Resource(kind="Deployment", group="apps"), Resource(kind="Service"))


class ApiError(Exception):
    """An error the server answers with Argo CD's body shape."""

    def __init__(self, http_status: int, grpc_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.message = message


def ts(epoch: float) -> str:
    """RFC 3339 at second resolution, like Argo CD's ``metav1.Time``."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_revision(repo_url: str, revision: str) -> str:
    """A branch or tag resolves to a stable fake commit SHA; a SHA resolves to itself."""
    if FULL_SHA.match(revision):
        return revision
    return hashlib.sha1(f"{repo_url}@{revision}".encode(), usedforsecurity=False).hexdigest()


@dataclass
class Operation:
    started: float
    revision: str
    requested: str = ""
    dry_run: bool = False
    prune: bool = False
    previous_health: str = "Missing"
    previous_sync: str = "OutOfSync"
    terminated_at: float | None = None
    settled: bool = False
    info: list[JSON] = field(default_factory=list)


@dataclass
class SimApp:
    name: str
    spec: JSON
    behaviour: Behaviour
    created: float
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    generation: int = 1
    live_revision: str | None = None
    live_health: str = "Missing"
    live_sync: str = "OutOfSync"
    reconciled: float | None = None
    operation: Operation | None = None
    history: list[JSON] = field(default_factory=list)
    deletion_requested: float | None = None
    stale_view: JSON | None = None
    stale_until: float = 0.0
    last_synced: float | None = None
    pending_drift: list[Drift] = field(default_factory=list)
    active_drift: list[Drift] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pending_drift = list(self.behaviour.drift)

    @property
    def sync_status(self) -> str:
        """What Argo CD reports: drift makes a Synced app OutOfSync."""
        return "OutOfSync" if self.active_drift and self.live_sync == "Synced" else self.live_sync

    def drift_of(self, resource: Resource) -> Drift | None:
        return next(
            (
                d
                for d in self.active_drift
                if d.kind == resource.kind and (d.name or self.name) == resource.name
            ),
            None,
        )

    @property
    def resources(self) -> tuple[Resource, ...]:
        resources = self.behaviour.resources or DEFAULT_RESOURCES
        return tuple(r if r.name else r.model_copy(update={"name": self.name}) for r in resources)

    @property
    def namespace(self) -> str:
        return str(self.spec.get("destination", {}).get("namespace") or "default")

    @property
    def repo_url(self) -> str:
        return str(self.spec.get("source", {}).get("repoURL", ""))


class Store:
    """All simulated objects, guarded by one lock (the server runs requests on threads)."""

    def __init__(self, scenario: Scenario, clock: Any = None) -> None:
        self.scenario = scenario
        self.clock = clock or (lambda: time.time() + scenario.clock_offset_seconds)
        self.lock = threading.RLock()
        self.apps: dict[str, SimApp] = {}
        wide_open: tuple[list[str], list[JSON]] = (["*"], [{"server": "*", "namespace": "*"}])
        self.projects: dict[str, JSON] = {
            "default": _project("default", *(([], []) if scenario.lock_default_project else wide_open))
        }
        self.resource_version = 1000
        for name, existing in scenario.existing.items():
            self._add_existing(name, existing)
            # An app cannot exist in a project that does not: create what existing apps use.
            project = str(self.apps[name].spec.get("project") or "default")
            self.projects.setdefault(project, _project(project, ["*"], [{"server": "*", "namespace": "*"}]))

    def _add_existing(self, name: str, existing: Any) -> None:
        spec = (
            copy.deepcopy(existing.spec)
            if existing.spec
            else {
                "project": existing.project,
                "source": {
                    "repoURL": existing.repo_url,
                    "path": existing.path,
                    "targetRevision": existing.revision,
                },
                "destination": {"server": "https://kubernetes.default.svc", "namespace": existing.namespace},
            }
        )
        now = self.clock()
        app = SimApp(name=name, spec=spec, behaviour=self.scenario.behaviour(name), created=now - 3600)
        source = spec.get("source") or {}
        app.live_revision = resolve_revision(source.get("repoURL", ""), source.get("targetRevision", "HEAD"))
        app.live_health, app.live_sync, app.reconciled = existing.health, existing.sync, now - 60
        app.history.append(_history(0, app.live_revision, now - 3600, app.repo_url))
        app.last_synced = now - 3600
        self.apps[name] = app

    # ---- time -------------------------------------------------------------------------
    def advance(self, app: SimApp) -> None:
        """Settle the operation and health that the clock says are final by now."""
        now = self.clock()
        op, beh = app.operation, app.behaviour
        self._drift(app, now)
        if op is None or op.settled:
            rolled_out = op is not None and now >= op.started + beh.healthy_after_seconds
            if rolled_out and op is not None and not op.dry_run and app.live_health == "Progressing":
                app.live_health = "Degraded" if beh.outcome_for(op.requested) == "Degraded" else "Healthy"
            return
        end = op.terminated_at or op.started + beh.sync_seconds
        if now < end:
            return
        op.settled = True
        app.reconciled = end + beh.reconcile_lag_seconds
        if op.dry_run:
            return
        if op.terminated_at or beh.outcome_for(op.requested) == "SyncFailed":
            app.live_health, app.live_sync = op.previous_health, op.previous_sync
            return
        app.live_revision, app.live_sync, app.live_health = op.revision, "Synced", "Progressing"
        app.last_synced, app.active_drift = end, []  # a sync puts drifted fields back
        app.history.append(_history(_next_history_id(app), op.revision, end, app.repo_url, op.started))
        self.advance(app)

    @staticmethod
    def _drift(app: SimApp, now: float) -> None:
        """Scheduled drift happens once, ``after_seconds`` after the last successful sync."""
        if app.last_synced is None or app.live_sync != "Synced":
            return
        due = [d for d in app.pending_drift if now >= app.last_synced + d.after_seconds]
        for drift in due:
            app.pending_drift.remove(drift)
            app.active_drift.append(drift)

    def inject_drift(self, app: SimApp, drift: Drift) -> None:
        app.active_drift.append(drift)

    def deleted(self, app: SimApp) -> bool:
        return app.deletion_requested is not None and self.clock() >= (
            app.deletion_requested + app.behaviour.delete_seconds
        )

    # ---- lookups ----------------------------------------------------------------------
    def get(self, name: str, verb: str = "get") -> SimApp:
        app = self.apps.get(name)
        if app is not None and self.deleted(app):
            del self.apps[name]
            app = None
        if app is None:
            # Argo CD does not leak existence: a missing app is "permission denied".
            raise ApiError(403, 7, f"permission denied: applications, {verb}, default/{name}, sub: admin")
        self.advance(app)
        return app

    def visible(self) -> list[SimApp]:
        for name in [n for n, a in self.apps.items() if self.deleted(a)]:
            del self.apps[name]
        for app in self.apps.values():
            self.advance(app)
        return sorted(self.apps.values(), key=lambda a: a.name)

    def next_resource_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    # ---- writes -----------------------------------------------------------------------
    def upsert(self, body: JSON, upsert: bool) -> SimApp:
        name = (body.get("metadata") or {}).get("name")
        spec = body.get("spec")
        if not name or not isinstance(spec, dict):
            raise ApiError(400, 3, "invalid application: metadata.name and spec are required")
        project = spec.get("project") or "default"
        if project not in self.projects:
            raise ApiError(400, 3, f"application references project {project} which does not exist")
        metadata = body.get("metadata") or {}
        labels, annotations = dict(metadata.get("labels") or {}), dict(metadata.get("annotations") or {})
        existing = self.apps.get(name)
        if existing is not None and not self.deleted(existing):
            if existing.spec != spec and not upsert:
                raise ApiError(
                    400, 3, "existing application spec is different; use upsert flag to force update"
                )
            if existing.spec != spec:
                existing.spec, existing.generation = copy.deepcopy(spec), existing.generation + 1
                existing.live_sync = "OutOfSync" if existing.live_revision else existing.live_sync
            if upsert:  # Argo CD's upsert replaces the labels and annotations with the body's
                existing.labels, existing.annotations = labels, annotations
            return existing
        app = SimApp(
            name=name,
            spec=copy.deepcopy(spec),
            behaviour=self.scenario.behaviour(name),
            created=self.clock(),
            labels=labels,
            annotations=annotations,
        )
        self.apps[name] = app
        return app

    def start_operation(
        self,
        app: SimApp,
        revision: str | None,
        dry_run: bool,
        prune: bool,
        before: JSON | None = None,
        info: list[JSON] | None = None,
    ) -> None:
        """Start a sync; ``before`` is the view that stale reads keep answering for a while, and
        ``info`` (a sync request's ``infos``) stays with the operation."""
        if app.operation is not None and not app.operation.settled:
            raise ApiError(400, 9, "another operation is already in progress")
        if app.deletion_requested is not None:
            raise ApiError(400, 9, f"application {app.name} is being deleted")
        now = self.clock()
        target = revision or str(app.spec.get("source", {}).get("targetRevision") or "HEAD")
        if before is not None and app.behaviour.stale_read_seconds > 0:
            app.stale_view, app.stale_until = before, now + app.behaviour.stale_read_seconds
        app.operation = Operation(
            started=now,
            revision=resolve_revision(app.repo_url, target),
            requested=target,
            dry_run=dry_run,
            prune=prune,
            previous_health=app.live_health,
            previous_sync=app.live_sync,
            info=list(info or []),
        )
        if not dry_run:
            app.live_sync, app.live_health = "OutOfSync", "Progressing"

    def rollback(
        self, app: SimApp, history_id: int, dry_run: bool, prune: bool, before: JSON | None = None
    ) -> None:
        if (app.spec.get("syncPolicy") or {}).get("automated"):
            raise ApiError(400, 9, "rollback cannot be initiated when auto-sync is enabled")
        entry = next((h for h in app.history if h["id"] == history_id), None)
        if entry is None:
            raise ApiError(400, 3, f"application {app.name} does not have deployment with id {history_id}")
        self.start_operation(app, str(entry["revision"]), dry_run, prune, before)

    def terminate(self, app: SimApp) -> None:
        if app.operation is None or app.operation.settled:
            raise ApiError(400, 9, "Unable to terminate operation. No operation is in progress")
        app.operation.terminated_at = self.clock()

    def delete(self, app: SimApp, cascade: bool) -> None:
        if app.deletion_requested is None:
            app.deletion_requested = self.clock()
            if not cascade:
                app.behaviour = app.behaviour.model_copy(update={"delete_seconds": 0.0})

    def upsert_project(self, body: JSON) -> JSON:
        project = body.get("project") or {}
        name = (project.get("metadata") or {}).get("name")
        if not name:
            raise ApiError(400, 3, "project.metadata.name is required")
        current = self.projects.get(name)
        if current is not None and current["spec"] != project.get("spec") and not body.get("upsert"):
            raise ApiError(400, 3, "existing project spec is different, use upsert flag to force update")
        self.projects[name] = {
            "metadata": {
                "name": name,
                "namespace": "argocd",
                "resourceVersion": self.next_resource_version(),
            },
            "spec": copy.deepcopy(project.get("spec") or {}),
        }
        return self.projects[name]


def _project(name: str, repos: list[str], destinations: list[JSON]) -> JSON:
    return {
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {"sourceRepos": repos, "destinations": destinations},
    }


def _next_history_id(app: SimApp) -> int:
    """As Argo CD's controller: the last entry's id plus one, and 0 for the first."""
    return int(app.history[-1]["id"]) + 1 if app.history else 0


def _history(
    history_id: int, revision: str, deployed: float, repo_url: str, started: float | None = None
) -> JSON:
    return {
        "id": history_id,
        "revision": revision,
        "deployedAt": ts(deployed),
        "deployStartedAt": ts(started if started is not None else deployed),
        "source": {"repoURL": repo_url},
    }

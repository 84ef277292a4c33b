"""Decide from one Application's JSON whether a sync is done, still going, or failed.

This is ``argocd app wait`` made explicit and pure, so it can be tested rule by rule. Old
deploy scripts read the stale Healthy state right after a sync; every gate below exists to
refuse that read, and none compares our clock with the cluster's:

1. the operation we see is not the one that was there before ours (an :class:`OperationMark`
   taken just before we asked), and did not start before it (server time against server time);
2. it is finished (no ``operation``, ``finishedAt`` set, phase final), and a real sync added a
   history entry newer than the mark's;
3. the app was reconciled after it finished (``reconciledAt >= finishedAt``, both server time);
4. the compared revision (or revisions, for a multi-source app) is the one asked for;
5. then sync is ``Synced`` and health ``Healthy``.

``Missing`` and ``Progressing`` are never final. ``Degraded`` fails fast only after a
non-Degraded state was seen; otherwise it fails once it has lasted a grace period, timed on
the watcher's own monotonic clock (a restarted watcher starts the grace again: later, never
sooner).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Error"})
FAILED_PHASES = frozenset({"Failed", "Error"})
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_DEGRADED_GRACE = timedelta(seconds=60)


class Outcome(StrEnum):
    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class ResourceKey:
    """Identifies one managed resource; an empty group is the core API group."""

    kind: str
    name: str
    namespace: str = ""
    group: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceKey:
        return cls(
            kind=str(data.get("kind", "")),
            name=str(data.get("name", "")),
            namespace=str(data.get("namespace") or ""),
            group=str(data.get("group") or ""),
        )

    def __str__(self) -> str:
        kind = f"{self.group}/{self.kind}" if self.group else self.kind
        return f"{kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True)
class OperationMark:
    """What identifies the last operation an app had before ours, read just before we start ours.

    Any later operation differs from it in one of these fields, whatever the clocks say; a sync
    that succeeds also adds a history entry above ``history_id``. Argo CD numbers history from
    0, so an app with no history is marked -1.
    """

    started_at: str = ""
    finished_at: str = ""
    phase: str = ""
    revisions: tuple[str, ...] = ()
    history_id: int = -1

    @classmethod
    def of(cls, app: Mapping[str, Any]) -> OperationMark:
        status = app.get("status") or {}
        op = status.get("operationState") or {}
        return cls(
            started_at=str(op.get("startedAt") or ""),
            finished_at=str(op.get("finishedAt") or ""),
            phase=str(op.get("phase") or ""),
            revisions=synced_revisions(op.get("syncResult") or {}),
            history_id=max((int(h.get("id", 0)) for h in status.get("history") or []), default=-1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "revisions": list(self.revisions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperationMark:
        return cls(**{**data, "revisions": tuple(data.get("revisions") or ())})


def synced_revisions(result: Mapping[str, Any]) -> tuple[str, ...]:
    """``revisions`` of a multi-source app's sync result or sync status, else its one ``revision``."""
    many = result.get("revisions")
    if many:
        return tuple(str(r) for r in many)
    return (str(result["revision"]),) if result.get("revision") else ()


@dataclass(frozen=True)
class WaitSpec:
    """What we are waiting for.

    :param after: the mark taken just before our sync (or rollback); ``None`` gates on the
        current state only, e.g. to check a dependency that this run does not deploy.
    :param revision: the revision asked for; a branch or tag is matched through the
        operation's resolved revision.
    :param dry_run: the operation was a dry run: only its own result matters.
    :param resources: judge only these resources instead of the whole app.
    :param degraded_grace: how long Degraded is tolerated when no progress was seen.
    """

    after: OperationMark | None = None
    revision: str | None = None
    dry_run: bool = False
    resources: tuple[ResourceKey, ...] = ()
    degraded_grace: timedelta = DEFAULT_DEGRADED_GRACE


@dataclass(frozen=True)
class Seen:
    """What earlier observations showed; carried from one evaluation to the next.

    :param progress: a state other than Degraded was seen.
    :param degraded_since: the watcher's monotonic time when Degraded was first seen.
    """

    progress: bool = False
    degraded_since: float | None = None


@dataclass(frozen=True)
class Evaluation:
    outcome: Outcome
    reason: str
    seen: Seen = field(default_factory=Seen)

    @property
    def done(self) -> bool:
        return self.outcome is Outcome.DONE

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


def parse_time(value: Any) -> datetime | None:
    """Parse Argo CD's RFC 3339 times; absent or empty means None."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _get(data: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def describe(app: Mapping[str, Any]) -> str:
    """One line naming the app and its last sync, health and operation, for logs and errors."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    revision = str(_get(status, "sync", "revision") or "-")[:12]
    parts = [
        f"app {_get(app, 'metadata', 'name')!r}",
        f"sync={_get(status, 'sync', 'status') or 'Unknown'}@{revision}",
        f"health={_get(status, 'health', 'status') or 'Unknown'}",
        f"operation={op.get('phase') or 'none'}",
    ]
    if op.get("startedAt"):
        parts.append(f"last sync started {op['startedAt']}")
    if op.get("message"):
        parts.append(f"operation message: {op['message']}")
    return ", ".join(parts)


def failing_resources(app: Mapping[str, Any]) -> list[str]:
    """Messages of resources that failed to sync or are not healthy."""
    status = app.get("status") or {}
    lines = []
    for res in _get(status, "operationState", "syncResult", "resources") or []:
        if res.get("status") == "SyncFailed":
            lines.append(f"{ResourceKey.from_dict(res)}: SyncFailed: {res.get('message', '')}".rstrip(": "))
    for res in status.get("resources") or []:
        health = res.get("health") or {}
        if health.get("status") in {"Degraded", "Missing", "Unknown"}:
            lines.append(
                f"{ResourceKey.from_dict(res)}: {health['status']}: {health.get('message', '')}".rstrip(": ")
            )
    return lines


def _failure(app: Mapping[str, Any], reason: str, seen: Seen) -> Evaluation:
    details = "; ".join(failing_resources(app))
    message = f"{reason} ({describe(app)})" + (f"; failing resources: {details}" if details else "")
    return Evaluation(Outcome.FAILED, message, seen)


def _is_ours(app: Mapping[str, Any], op: Mapping[str, Any], mark: OperationMark) -> bool:
    """The operation state is not the marked one, nor older than it (server time only)."""
    if not op or OperationMark.of(app) == mark:
        return False
    started, marked = parse_time(op.get("startedAt")), parse_time(mark.started_at)
    return marked is None or (started is not None and started >= marked)


def _operation_gate(app: Mapping[str, Any], spec: WaitSpec, seen: Seen) -> Evaluation | None:
    """Refuse any state that does not come from our own, finished, reconciled operation."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    mark = spec.after
    if mark is not None and not app.get("operation") and not _is_ours(app, op, mark):
        last = mark.started_at or "never"
        return Evaluation(
            Outcome.WAITING, f"waiting for our operation (the one before it started {last})", seen
        )
    phase = op.get("phase")
    if mark is not None and phase in FAILED_PHASES and not app.get("operation"):
        return _failure(app, f"sync {phase}: {op.get('message', '')}".rstrip(": "), seen)
    finished = parse_time(op.get("finishedAt"))
    if app.get("operation") or (mark is not None and (finished is None or phase not in FINAL_PHASES)):
        return Evaluation(Outcome.WAITING, f"operation in progress (phase {phase or 'pending'})", seen)
    if spec.dry_run:
        return None
    if mark is not None and OperationMark.of(app).history_id <= mark.history_id:
        return Evaluation(Outcome.WAITING, "operation finished; its history entry is not recorded yet", seen)
    reconciled = parse_time(status.get("reconciledAt"))
    if finished and (reconciled is None or reconciled < finished):
        return Evaluation(Outcome.WAITING, f"not reconciled since the operation finished at {finished}", seen)
    return _revision_gate(status, op, spec, seen)


def _revision_gate(
    status: Mapping[str, Any], op: Mapping[str, Any], spec: WaitSpec, seen: Seen
) -> Evaluation | None:
    if not spec.revision:
        return None
    compared = synced_revisions(status.get("sync") or {})
    if FULL_SHA.match(spec.revision) and len(compared) <= 1:
        expected: tuple[str, ...] = (spec.revision,)
    elif spec.after is not None:
        expected = synced_revisions(op.get("syncResult") or {})
    else:
        return None
    if expected and compared != expected:
        return Evaluation(
            Outcome.WAITING, f"compared revision {_one(compared)!r}, waiting for {_one(expected)!r}", seen
        )
    return None


def _one(revisions: tuple[str, ...]) -> str:
    return revisions[0] if len(revisions) == 1 else ",".join(revisions)


def _health_and_sync(app: Mapping[str, Any], spec: WaitSpec) -> tuple[str, str, str]:
    """Health, sync status and a note, for the whole app or the selected resources."""
    status = app.get("status") or {}
    if not spec.resources:
        return (
            str(_get(status, "health", "status") or "Unknown"),
            str(_get(status, "sync", "status") or "Unknown"),
            str(_get(status, "health", "message") or ""),
        )
    reported = {ResourceKey.from_dict(r): r for r in status.get("resources") or []}
    healths, syncs, notes = [], [], []
    for key in spec.resources:
        res = reported.get(key)
        if res is None:
            return "Missing", "Unknown", f"{key} is not reported yet"
        healths.append(str(_get(res, "health", "status") or "Healthy"))
        syncs.append(str(res.get("status") or "Unknown"))
        if healths[-1] != "Healthy":
            notes.append(f"{key} is {healths[-1]}")
    return _worst(healths), ("Synced" if all(s == "Synced" for s in syncs) else "OutOfSync"), "; ".join(notes)


def _worst(healths: Iterable[str]) -> str:
    order = ["Degraded", "Missing", "Unknown", "Progressing", "Suspended", "Healthy"]
    return min(healths, key=lambda h: order.index(h) if h in order else 2, default="Healthy")


def _dry_run_evaluation(app: Mapping[str, Any], seen: Seen) -> Evaluation:
    results = _get(app, "status", "operationState", "syncResult", "resources") or []
    would_change = [f"{ResourceKey.from_dict(r)}: {r.get('message', r.get('status', ''))}" for r in results]
    summary = "; ".join(would_change) if would_change else "no resources reported"
    return Evaluation(Outcome.DONE, f"dry run succeeded, would apply: {summary}", seen)


def evaluate(
    app: Mapping[str, Any], spec: WaitSpec, seen: Seen | None = None, now: float | None = None
) -> Evaluation:
    """Return the verdict for this observation, with what it adds to ``seen``.

    :param app: the Application JSON as returned by ``GET /api/v1/applications/{name}``.
    :param spec: what was asked for.
    :param seen: the ``seen`` of the previous verdict (start with ``Seen()``).
    :param now: the watcher's monotonic time (for the Degraded grace period).
    """
    seen = seen or Seen()
    now = time.monotonic() if now is None else now
    if _get(app, "metadata", "deletionTimestamp"):
        return _failure(app, "application is being deleted", seen)
    health, sync, note = _health_and_sync(app, spec)
    if health != "Degraded":
        seen = replace(seen, progress=True, degraded_since=None)
    gate = _operation_gate(app, spec, seen)
    if gate is not None:
        return gate
    if spec.dry_run:
        return _dry_run_evaluation(app, seen)
    if health == "Degraded":
        return _degraded(app, spec, seen, now, note)
    if health == "Healthy" and sync == "Synced":
        return Evaluation(Outcome.DONE, describe(app), seen)
    detail = f": {note}" if note else ""
    return Evaluation(Outcome.WAITING, f"sync={sync}, health={health}{detail}", seen)


def _degraded(app: Mapping[str, Any], spec: WaitSpec, seen: Seen, now: float, note: str) -> Evaluation:
    if seen.progress:
        return _failure(app, f"Degraded after progress{': ' + note if note else ''}", seen)
    if seen.degraded_since is None:
        seen = replace(seen, degraded_since=now)
    elif now - seen.degraded_since >= spec.degraded_grace.total_seconds():
        return _failure(app, f"Degraded for longer than {spec.degraded_grace}", seen)
    return Evaluation(Outcome.WAITING, f"Degraded, within the {spec.degraded_grace} grace period", seen)


def evaluate_deletion(
    app: Mapping[str, Any] | None, stuck_after: timedelta, watched: float = 0.0
) -> Evaluation:
    """Whether a deleted app is gone, still going, or stuck on its finalizers.

    Argo CD deletes asynchronously: the app stays, with ``metadata.deletionTimestamp``, until
    its finalizers have removed the resources. Stuck means the watcher has seen it deleting for
    ``stuck_after`` (``watched`` seconds, on the watcher's own clock, so no clock skew counts);
    the verdict then names the finalizers and the resources still present.
    """
    if app is None:
        return Evaluation(Outcome.DONE, "deleted")
    name = _get(app, "metadata", "name")
    since = _get(app, "metadata", "deletionTimestamp")
    if not since:
        return Evaluation(Outcome.WAITING, f"app {name!r} has no deletionTimestamp yet")
    left = [str(ResourceKey.from_dict(r)) for r in _get(app, "status", "resources") or []]
    if watched >= stuck_after.total_seconds():
        finalizers = ", ".join(_get(app, "metadata", "finalizers") or []) or "none listed"
        return Evaluation(
            Outcome.FAILED,
            f"app {name!r} stuck on finalizers ({finalizers}), deleting since {since}, watched for "
            f"{watched:.0f} s; resources still present: {', '.join(left) or 'none reported'}",
        )
    return Evaluation(Outcome.WAITING, f"app {name!r} deleting since {since}; {len(left)} resources left")

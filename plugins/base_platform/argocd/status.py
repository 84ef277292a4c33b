"""Decide from one Application's JSON whether a sync is done, still going, or failed.

This is ``argocd app wait`` made explicit and pure, so it can be tested rule by rule
(../shared/contracts/ARGOCD.md). Old deploy scripts read the stale Healthy state right after
a sync; every gate below exists to refuse that read:

1. the operation we see started at or after our own request;
2. it is finished (no ``operation``, ``finishedAt`` set, phase final);
3. the app was reconciled after it finished (``reconciledAt >= finishedAt``);
4. the compared revision is the one asked for;
5. then sync is ``Synced`` and health ``Healthy``.

``Missing`` and ``Progressing`` are never final. ``Degraded`` fails fast only after a
non-Degraded state was seen; otherwise it fails once a grace period after the operation
finished has passed, which needs no memory and so survives a triggerer restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
class WaitSpec:
    """What we are waiting for.

    :param requested_at: when our sync (or rollback) was requested; ``None`` gates on the
        current state only, e.g. to check a dependency that this run does not deploy.
    :param revision: the revision asked for; a branch or tag is matched through the
        operation's resolved revision.
    :param dry_run: the operation was a dry run: only its own result matters.
    :param resources: judge only these resources instead of the whole app.
    :param degraded_grace: how long Degraded is tolerated when no progress was seen.
    """

    requested_at: datetime | None = None
    revision: str | None = None
    dry_run: bool = False
    resources: tuple[ResourceKey, ...] = ()
    degraded_grace: timedelta = DEFAULT_DEGRADED_GRACE


@dataclass(frozen=True)
class Seen:
    """What earlier observations showed; carried from one evaluation to the next."""

    progress: bool = False


@dataclass(frozen=True)
class Verdict:
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


def _failure(app: Mapping[str, Any], reason: str, seen: Seen) -> Verdict:
    details = "; ".join(failing_resources(app))
    message = f"{reason} ({describe(app)})" + (f"; failing resources: {details}" if details else "")
    return Verdict(Outcome.FAILED, message, seen)


def _operation_gate(app: Mapping[str, Any], spec: WaitSpec, seen: Seen) -> Verdict | None:
    """Refuse any state that does not come from our own, finished, reconciled operation."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    started = parse_time(op.get("startedAt"))
    requested = spec.requested_at.replace(microsecond=0) if spec.requested_at else None
    if requested and (started is None or started < requested):
        return Verdict(Outcome.WAITING, f"waiting for our operation to start (last started {started})", seen)
    phase = op.get("phase")
    if requested and phase in FAILED_PHASES:
        return _failure(app, f"sync {phase}: {op.get('message', '')}".rstrip(": "), seen)
    finished = parse_time(op.get("finishedAt"))
    if app.get("operation") or (requested and (finished is None or phase not in FINAL_PHASES)):
        return Verdict(Outcome.WAITING, f"operation in progress (phase {phase or 'pending'})", seen)
    if spec.dry_run:
        return None
    reconciled = parse_time(status.get("reconciledAt"))
    if finished and (reconciled is None or reconciled < finished):
        return Verdict(Outcome.WAITING, f"not reconciled since the operation finished at {finished}", seen)
    return _revision_gate(status, op, spec, seen)


def _revision_gate(
    status: Mapping[str, Any], op: Mapping[str, Any], spec: WaitSpec, seen: Seen
) -> Verdict | None:
    if not spec.revision:
        return None
    resolved = _get(op, "syncResult", "revision") if spec.requested_at else None
    expected = spec.revision if FULL_SHA.match(spec.revision) else resolved
    compared = _get(status, "sync", "revision")
    if expected and compared != expected:
        return Verdict(Outcome.WAITING, f"compared revision {compared!r}, waiting for {expected!r}", seen)
    return None


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


def _dry_run_verdict(app: Mapping[str, Any], seen: Seen) -> Verdict:
    results = _get(app, "status", "operationState", "syncResult", "resources") or []
    would_change = [f"{ResourceKey.from_dict(r)}: {r.get('message', r.get('status', ''))}" for r in results]
    summary = "; ".join(would_change) if would_change else "no resources reported"
    return Verdict(Outcome.DONE, f"dry run succeeded, would apply: {summary}", seen)


def evaluate(
    app: Mapping[str, Any], spec: WaitSpec, seen: Seen | None = None, now: datetime | None = None
) -> Verdict:
    """Return the verdict for this observation, with what it adds to ``seen``.

    :param app: the Application JSON as returned by ``GET /api/v1/applications/{name}``.
    :param spec: what was asked for.
    :param seen: the ``seen`` of the previous verdict (start with ``Seen()``).
    :param now: the current time (for the Degraded grace period).
    """
    seen = seen or Seen()
    now = now or datetime.now(UTC)
    if _get(app, "metadata", "deletionTimestamp"):
        return _failure(app, "application is being deleted", seen)
    health, sync, note = _health_and_sync(app, spec)
    if health != "Degraded":
        seen = replace(seen, progress=True)
    gate = _operation_gate(app, spec, seen)
    if gate is not None:
        return gate
    if spec.dry_run:
        return _dry_run_verdict(app, seen)
    if health == "Degraded":
        return _degraded(app, spec, seen, now, note)
    if health == "Healthy" and sync == "Synced":
        return Verdict(Outcome.DONE, describe(app), seen)
    detail = f": {note}" if note else ""
    return Verdict(Outcome.WAITING, f"sync={sync}, health={health}{detail}", seen)


def _degraded(app: Mapping[str, Any], spec: WaitSpec, seen: Seen, now: datetime, note: str) -> Verdict:
    if seen.progress:
        return _failure(app, f"Degraded after progress{': ' + note if note else ''}", seen)
    since = parse_time(_get(app, "status", "operationState", "finishedAt")) or spec.requested_at
    if since is not None and now - since >= spec.degraded_grace:
        return _failure(app, f"Degraded for longer than {spec.degraded_grace}", seen)
    return Verdict(Outcome.WAITING, f"Degraded, within the {spec.degraded_grace} grace period", seen)


def deletion_verdict(
    app: Mapping[str, Any] | None, stuck_after: timedelta, now: datetime | None = None
) -> Verdict:
    """Whether a deleted app is gone, still going, or stuck on its finalizers.

    Argo CD deletes asynchronously: the app stays, with ``metadata.deletionTimestamp``, until
    its finalizers have removed the resources. Stuck means that timestamp is older than
    ``stuck_after``; the verdict then names the finalizers and the resources still present.
    """
    if app is None:
        return Verdict(Outcome.DONE, "deleted")
    name = _get(app, "metadata", "name")
    since = parse_time(_get(app, "metadata", "deletionTimestamp"))
    if since is None:
        return Verdict(Outcome.WAITING, f"app {name!r} has no deletionTimestamp yet")
    left = [str(ResourceKey.from_dict(r)) for r in _get(app, "status", "resources") or []]
    age = ((now or datetime.now(UTC)) - since).total_seconds()
    if age >= stuck_after.total_seconds():
        finalizers = ", ".join(_get(app, "metadata", "finalizers") or []) or "none listed"
        return Verdict(
            Outcome.FAILED,
            f"app {name!r} stuck on finalizers ({finalizers}) since {since.isoformat()} ({age:.0f} s); "
            f"resources still present: {', '.join(left) or 'none reported'}",
        )
    return Verdict(Outcome.WAITING, f"app {name!r} deleting for {age:.0f} s; {len(left)} resources left")

"""Every rule of "when is an application done", one row each; no rule reads a clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from base_platform.argocd.status import (
    OperationMark,
    Outcome,
    ResourceKey,
    Seen,
    WaitSpec,
    describe,
    evaluate,
)

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
SHA = "a" * 40
OLD_SHA = "b" * 40


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def app(  # noqa: C901 - one keyword per field of the Application it builds
    *,
    started: float | None = 1,
    finished: float | None = 5,
    reconciled: float | None = 6,
    phase: str | None = "Succeeded",
    operation: bool = False,
    revision: str = SHA,
    resolved: str | None = SHA,
    sync: str = "Synced",
    health: str = "Healthy",
    message: str = "",
    resources: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    failed_results: bool = False,
    history: int = 2,
    revisions: list[str] | None = None,
    resolved_many: list[str] | None = None,
) -> dict[str, Any]:
    op_state: dict[str, Any] = {}
    if started is not None:
        op_state["startedAt"] = iso(started)
    if finished is not None:
        op_state["finishedAt"] = iso(finished)
    if phase:
        op_state["phase"] = phase
    if message:
        op_state["message"] = message
    if resolved:
        results = (
            [
                {
                    "kind": "Deployment",
                    "name": "web",
                    "namespace": "ns",
                    "status": "SyncFailed",
                    "message": "admission webhook denied",
                }
            ]
            if failed_results
            else []
        )
        op_state["syncResult"] = {"revision": resolved, "resources": results}
    if resolved_many:
        op_state["syncResult"] = {"revisions": resolved_many, "resources": []}
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision} | ({"revisions": revisions} if revisions else {}),
        "history": [{"id": i, "revision": OLD_SHA} for i in range(1, history + 1)],
        "health": {"status": health},
        "resources": resources or [],
    }
    if op_state:
        status["operationState"] = op_state
    if reconciled is not None:
        status["reconciledAt"] = iso(reconciled)
    body: dict[str, Any] = {"metadata": {"name": "web"}, "status": status}
    if deleting:
        body["metadata"]["deletionTimestamp"] = iso(3)
    if operation:
        body["operation"] = {"sync": {"revision": SHA}}
    return body


# The operation that ran before ours: what the sync operator marks just before it syncs.
MARK = OperationMark(
    started_at=iso(-100), finished_at=iso(-90), phase="Succeeded", revisions=(OLD_SHA,), history_id=1
)
STALE = {"started": -100, "finished": -90, "reconciled": -80, "resolved": OLD_SHA, "history": 1}
SPEC = WaitSpec(after=MARK, revision=SHA)
NOW = 1000.0  # the watcher's monotonic clock

CASES: list[tuple[str, dict[str, Any], WaitSpec, Seen, Outcome, str]] = [
    ("all gates pass", {}, SPEC, Seen(), Outcome.DONE, "health=Healthy"),
    ("stale read: the marked operation itself", STALE, SPEC, Seen(), Outcome.WAITING, "our operation"),
    (
        "stale read: no operation state at all",
        {"started": None, "finished": None, "phase": None},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "our operation",
    ),
    (
        "stale read: a state older than the mark (server time against server time)",
        STALE | {"started": -200, "finished": -190, "history": 0},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "our operation",
    ),
    (
        "ours started in the same second as the marked one, and added its history entry",
        {"started": -100, "finished": -100, "reconciled": -100},
        SPEC,
        Seen(),
        Outcome.DONE,
        "",
    ),
    (
        "finished, but its history entry is not recorded yet",
        {"history": 1},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "history entry",
    ),
    ("operation field still set", {"operation": True}, SPEC, Seen(), Outcome.WAITING, "in progress"),
    ("phase Running", {"phase": "Running", "finished": None}, SPEC, Seen(), Outcome.WAITING, "in progress"),
    (
        "phase Terminating",
        {"phase": "Terminating", "finished": None},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "in progress",
    ),
    ("finishedAt empty", {"finished": None}, SPEC, Seen(), Outcome.WAITING, "in progress"),
    ("not reconciled yet", {"reconciled": None}, SPEC, Seen(), Outcome.WAITING, "not reconciled"),
    (
        "reconciled before the operation finished",
        {"reconciled": 4},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "not reconciled",
    ),
    ("reconciled in the same second as finished", {"reconciled": 5}, SPEC, Seen(), Outcome.DONE, ""),
    ("compared revision differs", {"revision": OLD_SHA}, SPEC, Seen(), Outcome.WAITING, "compared revision"),
    (
        "branch matched through the resolved revision",
        {"resolved": SHA},
        WaitSpec(after=MARK, revision="main"),
        Seen(),
        Outcome.DONE,
        "",
    ),
    (
        "branch: compared revision lags the resolved one",
        {"revision": OLD_SHA},
        WaitSpec(after=MARK, revision="main"),
        Seen(),
        Outcome.WAITING,
        "compared revision",
    ),
    (
        "phase Failed fails with the operation's message",
        {"phase": "Failed", "message": "one or more objects failed to apply", "failed_results": True},
        SPEC,
        Seen(),
        Outcome.FAILED,
        "one or more objects failed to apply",
    ),
    (
        "phase Error fails",
        {"phase": "Error", "message": "rpc error"},
        SPEC,
        Seen(),
        Outcome.FAILED,
        "sync Error",
    ),
    (
        "a failed operation older than the mark is not ours",
        {"phase": "Failed", "started": -150, "finished": -140},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "our operation",
    ),
    (
        "multi-source: every source at the revisions our operation synced",
        {"revision": "", "revisions": [SHA, OLD_SHA], "resolved": None, "resolved_many": [SHA, OLD_SHA]},
        WaitSpec(after=MARK, revision="main"),
        Seen(),
        Outcome.DONE,
        "",
    ),
    (
        "multi-source: one source still compared at its old revision",
        {"revision": "", "revisions": [OLD_SHA, OLD_SHA], "resolved": None, "resolved_many": [SHA, OLD_SHA]},
        WaitSpec(after=MARK, revision="main"),
        Seen(),
        Outcome.WAITING,
        "compared revision",
    ),
    ("Progressing is never final", {"health": "Progressing"}, SPEC, Seen(), Outcome.WAITING, "Progressing"),
    (
        "Missing is never final",
        {"health": "Missing", "sync": "OutOfSync"},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "Missing",
    ),
    ("Suspended waits", {"health": "Suspended"}, SPEC, Seen(), Outcome.WAITING, "Suspended"),
    ("Healthy but OutOfSync waits", {"sync": "OutOfSync"}, SPEC, Seen(), Outcome.WAITING, "OutOfSync"),
    (
        "Degraded after progress fails fast",
        {"health": "Degraded"},
        SPEC,
        Seen(progress=True),
        Outcome.FAILED,
        "Degraded after progress",
    ),
    (
        "Degraded with no progress seen waits within the grace period",
        {"health": "Degraded"},
        SPEC,
        Seen(),
        Outcome.WAITING,
        "grace",
    ),
    (
        "Degraded with no progress seen fails after the grace period",
        {"health": "Degraded"},
        WaitSpec(after=MARK, revision=SHA, degraded_grace=timedelta(seconds=3)),
        Seen(degraded_since=NOW - 5),
        Outcome.FAILED,
        "longer than",
    ),
    (
        "Degraded during a stale read is not judged",
        STALE | {"health": "Degraded"},
        SPEC,
        Seen(progress=True),
        Outcome.WAITING,
        "our operation",
    ),
    ("an app being deleted fails", {"deleting": True}, SPEC, Seen(), Outcome.FAILED, "being deleted"),
    (
        "dry run: done when our operation succeeded, whatever the live state",
        {"health": "Degraded", "sync": "OutOfSync", "reconciled": None, "revision": OLD_SHA},
        WaitSpec(after=MARK, revision=SHA, dry_run=True),
        Seen(),
        Outcome.DONE,
        "dry run",
    ),
    (
        "dry run: still running",
        {"phase": "Running", "finished": None},
        WaitSpec(after=MARK, dry_run=True),
        Seen(),
        Outcome.WAITING,
        "in progress",
    ),
    (
        "dry run: failed",
        {"phase": "Failed", "message": "invalid manifest"},
        WaitSpec(after=MARK, dry_run=True),
        Seen(),
        Outcome.FAILED,
        "invalid manifest",
    ),
    (
        "no request: gate on current state only",
        {"started": -100, "finished": -90, "reconciled": -80},
        WaitSpec(revision=SHA),
        Seen(),
        Outcome.DONE,
        "",
    ),
    (
        "no request: unhealthy dependency waits",
        {"health": "Progressing", "started": -100, "finished": -90, "reconciled": -80},
        WaitSpec(),
        Seen(),
        Outcome.WAITING,
        "",
    ),
]

WEB = {"group": "apps", "kind": "Deployment", "namespace": "ns", "name": "web"}
DB = {"group": "apps", "kind": "StatefulSet", "namespace": "ns", "name": "db"}
RESOURCE_SPEC = WaitSpec(after=MARK, revision=SHA, resources=(ResourceKey.from_dict(WEB),))
CASES += [
    (
        "selected resource healthy while another is degraded",
        {
            "health": "Degraded",
            "resources": [
                WEB | {"status": "Synced", "health": {"status": "Healthy"}},
                DB | {"status": "Synced", "health": {"status": "Degraded"}},
            ],
        },
        RESOURCE_SPEC,
        Seen(),
        Outcome.DONE,
        "",
    ),
    (
        "selected resource not reported yet",
        {"resources": [DB | {"status": "Synced"}]},
        RESOURCE_SPEC,
        Seen(),
        Outcome.WAITING,
        "not reported",
    ),
    (
        "selected resource degraded after progress",
        {
            "resources": [
                WEB | {"status": "Synced", "health": {"status": "Degraded", "message": "deadline exceeded"}}
            ]
        },
        RESOURCE_SPEC,
        Seen(progress=True),
        Outcome.FAILED,
        "deadline exceeded",
    ),
    (
        "selected resource out of sync",
        {"resources": [WEB | {"status": "OutOfSync", "health": {"status": "Healthy"}}]},
        RESOURCE_SPEC,
        Seen(),
        Outcome.WAITING,
        "OutOfSync",
    ),
]


@pytest.mark.parametrize(
    ("fields", "spec", "seen", "outcome", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule(fields: dict[str, Any], spec: WaitSpec, seen: Seen, outcome: Outcome, reason: str) -> None:
    verdict = evaluate(app(**fields), spec, seen, now=NOW)
    assert verdict.outcome is outcome, verdict.reason
    assert reason in verdict.reason


def test_the_degraded_grace_runs_on_the_watchers_clock() -> None:
    """First Degraded sighting starts the grace; only the watcher's own monotonic time counts."""
    spec = WaitSpec(after=MARK, revision=SHA, degraded_grace=timedelta(seconds=30))
    first = evaluate(app(health="Degraded"), spec, Seen(), now=NOW)
    assert first.outcome is Outcome.WAITING and first.seen.degraded_since == NOW
    assert evaluate(app(health="Degraded"), spec, first.seen, now=NOW + 29).outcome is Outcome.WAITING
    assert evaluate(app(health="Degraded"), spec, first.seen, now=NOW + 30).outcome is Outcome.FAILED


def test_the_mark_round_trips_through_a_trigger_kwarg() -> None:
    live = app()
    mark = OperationMark.of(live)
    assert mark == OperationMark(iso(1), iso(5), "Succeeded", (SHA,), 2)
    assert OperationMark.from_dict(mark.to_dict()) == mark


def test_the_first_sync_of_a_new_app_is_recognised_by_its_history_entry_0() -> None:
    """Argo CD numbers history from 0: a new app is marked -1, so its first entry counts."""
    new = app(started=None, finished=None, phase=None, resolved=None, history=0)
    mark = OperationMark.of(new)
    assert mark.history_id == -1
    first = app()
    first["status"]["history"] = [{"id": 0, "revision": SHA}]
    assert evaluate(first, WaitSpec(after=mark, revision=SHA), now=NOW).outcome is Outcome.DONE


def test_progress_is_remembered_across_observations() -> None:
    """Progressing then Degraded fails fast; the same Degraded seen first only waits."""
    first = evaluate(app(health="Progressing"), SPEC, Seen(), now=NOW)
    assert first.outcome is Outcome.WAITING and first.seen.progress
    assert evaluate(app(health="Degraded"), SPEC, first.seen, now=NOW).outcome is Outcome.FAILED
    assert evaluate(app(health="Degraded"), SPEC, Seen(), now=NOW).outcome is Outcome.WAITING


def test_failure_names_app_sync_health_operation_and_resources() -> None:
    resources = [WEB | {"status": "Synced", "health": {"status": "Degraded", "message": "progress deadline"}}]
    verdict = evaluate(
        app(health="Degraded", resources=resources, message="sync ok"), SPEC, Seen(True), now=NOW
    )
    for part in (
        "'web'",
        "sync=Synced",
        "health=Degraded",
        "operation=Succeeded",
        "last sync started",
        "apps/Deployment ns/web: Degraded: progress deadline",
    ):
        assert part in verdict.reason


def test_describe_tolerates_an_empty_app() -> None:
    assert describe({}) == "app None, sync=Unknown@-, health=Unknown, operation=none"


def test_deletion_verdicts() -> None:
    """Stuck is measured by how long the watcher has seen the deletion, not by the server's timestamp."""
    from base_platform.argocd.status import Outcome, evaluate_deletion

    app = {
        "metadata": {"name": "web", "deletionTimestamp": "2026-11-26T09:50:00Z", "finalizers": ["f"]},
        "status": {"resources": [{"kind": "Service", "namespace": "n", "name": "web"}]},
    }
    assert evaluate_deletion(None, timedelta(minutes=5), 0).outcome is Outcome.DONE
    assert evaluate_deletion(app, timedelta(minutes=15), 600).outcome is Outcome.WAITING
    stuck = evaluate_deletion(app, timedelta(minutes=5), 600)
    assert stuck.outcome is Outcome.FAILED
    assert stuck.reason.endswith(
        "stuck on finalizers (f), deleting since 2026-11-26T09:50:00Z, watched for 600 s; "
        "resources still present: Service n/web"
    )
    pending = {"metadata": {"name": "web"}}
    assert evaluate_deletion(pending, timedelta(0), 10).outcome is Outcome.WAITING

"""pipeline_management's circuit breaker: write-audit-publish for every run of a pipeline.

A run's commit *stages* its snapshot: Iceberg makes it on top of ``main`` but on no branch, and
the table's ``audit`` branch points at it, so an operator can read it and no reader of ``main``
sees it. The audit then checks it:

- the run's quarantine rate is at most ``circuit_breaker.max_quarantine_rate``;
- its input rows are within the monitor's band (robust z-score against the dataset's history);
- the contract holds: every stored column is in the snapshot's schema, required columns hold no
  null, and the snapshot holds exactly the rows the run stored.

All pass: ``main`` is fast-forwarded to the snapshot (published) and the Asset event follows. One
fails: the breaker opens. ``main`` and everything downstream stay as they were, and the DAG
pauses its schedule and notifies (see ``dag``). ``max_consecutive_failures`` failed runs in a row
open it too. While it is open, runs stop at discover, until ``pipeline_control`` publishes or
discards the audit, which closes the breaker and resumes the schedule.

The breaker's state and its transitions are a table property (``base.breaker``), beside the
data it guards, so the tasks, the page and the API read the same record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.quality_monitoring.anomalies import MIN_HISTORY, THRESHOLD, robust_z
from base_platform.pipelines.run_records import RunRecord, highest
from base_platform.pipelines.spec import Pipeline

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

log = logging.getLogger(__name__)
AUDIT = "audit"  # the branch that holds a run's snapshot until it is published or discarded
STATE_PROPERTY = f"{tables.PREFIX}breaker"
TRANSITIONS_KEPT = 20


class BreakerError(ValueError):
    """A request the breaker's state refuses (nothing to publish, ``main`` moved); retrying cannot help."""


class Breaker(BaseModel):
    """The breaker of one dataset, as its table property holds it."""

    state: Literal["closed", "open"] = "closed"
    consecutive_failures: int = 0
    last_counted_run: str | None = None  # a settle that runs twice counts its run once
    reason: str | None = None
    run: str | None = None  # the run that opened it
    audit_snapshot_id: int | None = None
    since: str | None = None
    transitions: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class AuditVerdict:
    """The audit of one staged snapshot: publish it when every check passed."""

    snapshot_id: int
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reason(self) -> str:
        return "; ".join(check.detail for check in self.checks if not check.passed)


def state(table: Table) -> Breaker:
    return Breaker.model_validate_json(table.properties.get(STATE_PROPERTY, "{}"))


def _save(table: Table, breaker: Breaker, event: str, **facts: Any) -> Breaker:
    """Record a transition (in the task log and the table) and the state it leads to."""
    entry = {"at": datetime.now(UTC).isoformat(), "event": event, **facts}
    log.info("circuit breaker of %s: %s %s", ".".join(table.name()), event, json.dumps(facts, default=str))
    saved = breaker.model_copy(update={"transitions": [*breaker.transitions, entry][-TRANSITIONS_KEPT:]})
    with table.transaction() as tx:
        tx.set_properties({STATE_PROPERTY: saved.model_dump_json()})
    return saved


def stage(table: Table, snapshot: Snapshot) -> None:
    """Point the ``audit`` branch at a staged snapshot (again, on a retry)."""
    audit = table.metadata.refs.get(AUDIT)
    if audit is not None and audit.snapshot_id == snapshot.snapshot_id:
        return
    with table.manage_snapshots() as manage:
        if audit is not None:
            manage.remove_branch(AUDIT)
        manage.create_branch(snapshot.snapshot_id, AUDIT)


def audit(pipeline: Pipeline, table: Table, snapshot_id: int) -> AuditVerdict:
    """The staged snapshot's run against the spec's limits, the monitor's band and the contract."""
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise BreakerError(f"no snapshot {snapshot_id} to audit")
    record = tables.run_record(snapshot)
    if record is None:
        raise BreakerError(f"snapshot {snapshot_id} is no run's: nothing to audit")
    earlier = [r for r in tables.history(table) if r.run != record.run]
    checks = (
        _quarantine(pipeline, record),
        _row_band(pipeline, record, earlier),
        _contract(pipeline, table, snapshot, record),
    )
    return AuditVerdict(snapshot_id, checks)


def _quarantine(pipeline: Pipeline, record: RunRecord) -> Check:
    limit = pipeline.spec.circuit_breaker.max_quarantine_rate
    rate = record.rows_quarantined / max(record.rows_in, 1)
    said = f"quarantine rate {rate:.1%} ({record.rows_quarantined} of {record.rows_in} rows)"
    if rate > limit:
        return Check("quarantine_rate", False, f"{said} is above the limit {limit:.1%}")
    return Check("quarantine_rate", True, f"{said}, limit {limit:.1%}")


def _row_band(pipeline: Pipeline, record: RunRecord, earlier: list[RunRecord]) -> Check:
    """The monitor's rule on rows in: within ``THRESHOLD`` robust z-scores of the earlier runs.

    Only for drops of files and whole recomputations: an incremental run (an API's, a table's, a
    stream's batch, an operator's append) takes what arrived since the last, which follows the
    load, not a band (a stream's batches went from 50,000 to 700,000 events in one benchmark).
    """
    if pipeline.spec.source.kind != "files" or pipeline.spec.operators:
        return Check("row_band", True, "an incremental run takes what arrived: no band")
    past = [float(r.rows_in) for r in earlier]
    rows = float(record.rows_in)
    if len(past) < MIN_HISTORY:
        return Check("row_band", True, f"{len(past)} earlier runs: no band before {MIN_HISTORY}")
    z = robust_z(rows, past)
    said = f"{int(rows)} rows in, z = {z:.1f} against {len(past)} earlier runs" if z is not None else ""
    if z is not None and abs(z) > THRESHOLD:
        return Check("row_band", False, f"{said}, beyond ±{THRESHOLD}")
    return Check("row_band", True, said or f"{int(rows)} rows in, as every earlier run")


def _contract(pipeline: Pipeline, table: Table, snapshot: Snapshot, record: RunRecord) -> Check:

    schema = table.schemas()[snapshot.schema_id] if snapshot.schema_id is not None else table.schema()
    missing = sorted(set(tables.stored_schema(pipeline).names) - {field.name for field in schema.fields})
    required = {c.name for c in pipeline.contract.columns if not c.nullable}
    nulls = sorted(c for c, n in record.null_counts.items() if c in required and n)
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    added = int(summary.get("added-records", 0))
    if record.rows_updated and not record.full_refresh:  # a merge adds back the rest of files it rewrote
        added -= int(summary.get("deleted-records", 0)) - record.rows_updated
    problems = [f"columns {missing} missing"] if missing else []
    problems += [f"required columns {nulls} hold nulls"] if nulls else []
    if added != record.rows_stored:
        problems.append(f"the snapshot added {added} rows, the run stored {record.rows_stored}")
    if problems:
        return Check("contract", False, f"contract {pipeline.contract.version}: {'; '.join(problems)}")
    return Check("contract", True, f"contract {pipeline.contract.version} holds for {added} rows")


def on_main(table: Table, snapshot_id: int) -> bool:
    """Whether readers of ``main`` see this snapshot (it was published, or built on since)."""
    return any(snapshot.snapshot_id == snapshot_id for snapshot in tables.lineage(table))


def audit_and_publish(pipeline: Pipeline, table: Table, snapshot_id: int, run: str) -> AuditVerdict:
    """Audit a staged snapshot, then publish it or open the breaker (safe to repeat)."""
    if on_main(table, snapshot_id):
        return AuditVerdict(snapshot_id, (Check("published", True, "already on main"),))
    verdict = audit(pipeline, table, snapshot_id)
    for check in verdict.checks:
        log.info("audit of snapshot %s: %s %s: %s", snapshot_id, check.name, check.passed, check.detail)
    if verdict.passed:
        publish_audit(table, snapshot_id)
        log.info("snapshot %s published to main", snapshot_id)
    else:
        trip(table, verdict.reason, run, snapshot_id)
    return verdict


def publish_audit(table: Table, snapshot_id: int) -> None:
    """Fast-forward ``main`` to the audited snapshot and drop the ``audit`` branch (idempotent)."""
    table = table.refresh()
    main = table.current_snapshot()
    audit_ref = table.metadata.refs.get(AUDIT)
    with table.manage_snapshots() as manage:
        if main is None or main.snapshot_id != snapshot_id:
            staged = table.snapshot_by_id(snapshot_id)
            if staged is None:
                raise BreakerError(f"no snapshot {snapshot_id} to publish")
            if staged.parent_snapshot_id != (main.snapshot_id if main else None):
                raise BreakerError(
                    f"main moved to {main.snapshot_id if main else None} since snapshot {snapshot_id} "
                    "was staged (a rollback, an erasure, or another run's publish): discard the audit "
                    "and run again"
                )
            manage.set_current_snapshot(snapshot_id)
        if audit_ref is not None and audit_ref.snapshot_id == snapshot_id:
            manage.remove_branch(AUDIT)


def trip(table: Table, reason: str, run: str, snapshot_id: int | None) -> tuple[Breaker, bool]:
    """Open the breaker; returns its state and whether this call opened it."""
    breaker = state(table)
    if breaker.state == "open":
        return breaker, False
    opened = breaker.model_copy(
        update={
            "state": "open",
            "reason": reason,
            "run": run,
            "audit_snapshot_id": snapshot_id,
            "since": datetime.now(UTC).isoformat(),
        }
    )
    return _save(table, opened, "opened", run=run, reason=reason, snapshot_id=snapshot_id), True


def count_run(table: Table, run: str, failed: list[str], limit: int) -> tuple[Breaker, bool]:
    """A finished run: a failure adds to the run of failures (and at ``limit`` opens the breaker),
    a success ends it. Returns the state and whether this call opened the breaker."""
    breaker = state(table)
    if breaker.state == "open" or breaker.last_counted_run == run:
        return breaker, False
    failures = breaker.consecutive_failures + 1 if failed else 0
    counted = breaker.model_copy(update={"consecutive_failures": failures, "last_counted_run": run})
    if failures >= limit:
        reason = f"{failures} failed runs in a row (limit {limit}); this one failed at {', '.join(failed)}"
        _save(table, counted, "failure", run=run, tasks=failed, in_a_row=failures)
        audit_ref = table.metadata.refs.get(AUDIT)
        return trip(table, reason, run, audit_ref.snapshot_id if audit_ref else None)
    if failed:
        return _save(table, counted, "failure", run=run, tasks=failed, in_a_row=failures), False
    if breaker.consecutive_failures:
        return _save(table, counted, "success", run=run), False
    with table.transaction() as tx:  # no transition to record, only the run counted
        tx.set_properties({STATE_PROPERTY: counted.model_dump_json()})
    return counted, False


def resolve_audit(table: Table, action: Literal["publish", "discard"], who: str, why: str) -> dict[str, Any]:
    """An operator's answer to an open breaker: publish the audit to ``main`` or discard it (its
    inputs are not read again: a corrected file has a new checksum; a source's position moves
    past it). Either closes the breaker."""
    breaker = state(table)
    audit_ref = table.metadata.refs.get(AUDIT)
    snapshot_id = audit_ref.snapshot_id if audit_ref else None
    if breaker.state != "open" and snapshot_id is None:
        raise BreakerError(f"{'.'.join(table.name())}: the breaker is closed and no audit is waiting")
    if action == "publish":
        if snapshot_id is None:
            raise BreakerError(f"{table.name()[-1]}: no audit to publish (discard to close the breaker)")
        publish_audit(table, snapshot_id)
    elif snapshot_id is not None:
        snapshot = table.snapshot_by_id(snapshot_id)
        record = tables.run_record(snapshot) if snapshot is not None else None
        discarded = json.loads(table.properties.get(tables.DISCARDED_INPUTS, "{}"))
        discarded |= {source["sha256"]: record.run for source in record.inputs} if record else {}
        from pyiceberg.table.update.snapshot import ManageSnapshots

        with table.transaction() as tx:
            with ManageSnapshots(tx) as manage:
                manage.remove_branch(AUDIT)
            tx.set_properties({tables.DISCARDED_INPUTS: json.dumps(discarded, sort_keys=True)})
            if record is not None and record.position is not None:
                tx.set_properties({tables.DISCARDED_POSITION: json.dumps(record.position)})
    closed = Breaker(last_counted_run=breaker.last_counted_run, transitions=breaker.transitions)
    facts = {"action": action, "who": who, "why": why, "snapshot_id": snapshot_id}
    _save(table.refresh(), closed, "closed", **facts)
    return {"dataset": table.name()[-1], **facts, "reason_it_opened": breaker.reason}


def audit_position(table: Table) -> Any:
    """Where the audit waiting for a decision leaves its source (None without one)."""
    audit_ref = table.metadata.refs.get(AUDIT)
    snapshot = table.snapshot_by_id(audit_ref.snapshot_id) if audit_ref else None
    record = tables.run_record(snapshot) if snapshot is not None else None
    return record.position if record is not None else None


def move_past(table: Table, position: Any) -> None:
    """The source's position moves past what an operator discarded without an audit (a stream's
    pending entries of runs that failed): they are not read again."""
    discarded = table.properties.get(tables.DISCARDED_POSITION)
    reached = highest([discarded and json.loads(discarded), position])
    with table.transaction() as tx:
        tx.set_properties({tables.DISCARDED_POSITION: json.dumps(reached)})


def drop_audit(table: Table, why: str) -> int | None:
    """Remove the ``audit`` branch without a decision (an erasure must reach every file), keeping
    the breaker as it is; returns the snapshot the branch held."""
    audit_ref = table.metadata.refs.get(AUDIT)
    if audit_ref is None:
        return None
    with table.manage_snapshots() as manage:
        manage.remove_branch(AUDIT)
    breaker = state(table.refresh())
    _save(table, breaker, "audit dropped", why=why, snapshot_id=audit_ref.snapshot_id)
    return audit_ref.snapshot_id

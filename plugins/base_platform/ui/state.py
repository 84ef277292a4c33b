"""What the platform page and ``/metrics`` show, read from Argo CD and the latest reports.

Reads are cached for ``CACHE_SECONDS`` per process: a page refresh or a Prometheus scrape never
costs more than one Argo CD list call per environment in that window.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog
from base_platform.catalog.models import Wave
from base_platform.types import JSON

if TYPE_CHECKING:
    from base_platform.pipelines.run_records import RunRecord

CACHE_SECONDS = 10.0
T = TypeVar("T")


class TTLCache:
    """One value per key, recomputed at most once per ``seconds`` (on a monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._values.get(key)
            if hit and time.monotonic() - hit[0] < self.seconds:
                value: T = hit[1]
                return value
            value = compute()
            self._values[key] = (time.monotonic(), value)
            return value


CACHE = TTLCache(CACHE_SECONDS)


def platform_state(environment: str) -> JSON:
    """Every catalog component by wave, with its live sync, health and revision."""
    return CACHE.get(f"platform:{environment}", lambda: _read_platform(environment))


def _read_platform(environment: str) -> JSON:
    catalog = default_catalog()
    try:
        with ArgoCDHook() as hook:
            live = {a["metadata"]["name"]: a for a in hook.list_applications().get("items") or []}
        problem = None
    except Exception as exc:  # shown on the page rather than a 500: the catalog still draws
        live, problem = {}, f"Argo CD did not answer: {exc}"
    components = []
    for component in catalog.components:
        status = (live.get(component.name) or {}).get("status") or {}
        components.append(
            {
                "name": component.name,
                "wave": component.wave.value,
                "depends_on": list(component.depends_on),
                "exists": component.name in live,
                "sync": (status.get("sync") or {}).get("status") or "Missing",
                "health": (status.get("health") or {}).get("status") or "Missing",
                "revision": str((status.get("sync") or {}).get("revision") or "")[:12],
            }
        )
    return {
        "environment": environment,
        "waves": [wave.value for wave in Wave],
        "components": components,
        "problem": problem,
        "read_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def pipeline_rows() -> list[JSON]:
    """One row per dataset: its last run's figures and the GB/hour and quarantine rate of up to 30 runs."""
    return CACHE.get("pipelines", _read_pipelines)


def _read_pipelines() -> list[JSON]:
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.pipeline_management import breaker
    from base_platform.pipelines.spec import Freshness, load_pipelines

    rows = []
    for pipeline in load_pipelines():
        spec = pipeline.spec
        table = tables.load(spec.name)
        runs = tables.history(table, limit=30)
        held = breaker.state(table) if table is not None else breaker.Breaker()
        last = runs[-1] if runs else None
        slo = [rule.max_age_hours * 3600 for rule in spec.quality if isinstance(rule, Freshness)]
        rows.append(
            {
                "dataset": spec.name,
                "dag_id": f"pipeline_{spec.name}",
                "last_run": last.run if last else None,
                "snapshot_id": last.snapshot_id if last else None,
                "committed_at": last.committed_at if last else None,
                "freshness_age_seconds": _age(last.committed_at) if last and last.committed_at else None,
                "freshness_slo_seconds": min(slo) if slo else None,
                "rows_in": last.rows_in if last else 0,
                "rows_stored": last.rows_stored if last else 0,
                "rows_quarantined": last.rows_quarantined if last else 0,
                "quarantine_rate": _rate(last),
                "gb_per_hour": last.gb_per_hour if last else 0.0,
                "wall_seconds": last.wall_seconds if last and last.wall_seconds is not None else 0.0,
                "history": [{"gb_per_hour": r.gb_per_hour, "quarantine_rate": _rate(r)} for r in runs],
                "breaker": held.model_dump(exclude={"transitions", "last_counted_run"}),
                "lag": last.lag or None if last else None,  # a stream's backlog as its batch began
            }
        )
    return rows


def dag_runs(dag_ids: list[str]) -> dict[str, JSON]:
    """Per DAG, from Airflow's database: its schedule, whether it is paused, and its newest run's
    state, start, end and seconds (the api-server, where this runs, has the database)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: dict[str, JSON] = {}
    with create_session() as session:
        for dag in session.scalars(select(DagModel).where(DagModel.dag_id.in_(dag_ids))):
            run = session.scalars(
                select(DagRun).where(DagRun.dag_id == dag.dag_id).order_by(DagRun.run_after.desc()).limit(1)
            ).first()
            seconds = (
                (run.end_date - run.start_date).total_seconds()
                if run and run.start_date and run.end_date
                else None
            )
            found[dag.dag_id] = {
                "schedule": dag.timetable_summary,
                "is_paused": dag.is_paused,
                "last_dag_run": {
                    "run_id": run.run_id,
                    "state": str(run.state),
                    "start_date": run.start_date.isoformat() if run.start_date else None,
                    "end_date": run.end_date.isoformat() if run.end_date else None,
                    "seconds": seconds,
                }
                if run
                else None,
            }
    return found


def _rate(record: RunRecord | None) -> float:
    if not record or not record.rows_in:
        return 0.0
    return round(float(record.rows_quarantined) / float(record.rows_in), 6)


def _age(when: str) -> float:
    return round((datetime.now(UTC) - datetime.fromisoformat(when)).total_seconds(), 1)


REPORTS_READ = 50  # the newest reports of a DAG looked at for each component's last verdict


def latest_report(dag_id: str, name: str) -> JSON | None:
    """The newest ``<name>.json`` a DAG wrote under the artifacts root (local roots only)."""
    reports = _reports(dag_id, name)
    return reports[0] if reports else None


def last_verdicts() -> dict[str, JSON]:
    """Each component's verdict in the newest platform_deploy run that selected it, with that run."""
    found: dict[str, JSON] = {}
    for report in _reports("platform_deploy", "deploy"):
        for row in report.get("components") or []:
            if row["component"] not in found and row["verdict"] != "not run":
                found[row["component"]] = {
                    "verdict": row["verdict"],
                    "ok": row["ok"],
                    "run_id": report.get("run_id"),
                    "finished_at": report.get("finished_at"),
                }
    return found


def _reports(dag_id: str, name: str) -> list[JSON]:
    return CACHE.get(f"reports:{dag_id}:{name}", lambda: _read_reports(dag_id, name))


def _read_reports(dag_id: str, name: str) -> list[JSON]:
    """A DAG's ``<name>.json`` reports, newest first."""
    from base_platform.artifacts import artifacts_root

    folder = Path(artifacts_root().path) / dag_id
    paths = sorted(folder.glob(f"*/{name}.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [json.loads(path.read_text()) for path in reversed(paths[-REPORTS_READ:])]

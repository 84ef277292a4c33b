"""What the platform page and ``/metrics`` show, read from Argo CD and the latest reports.

Reads are cached for ``CACHE_SECONDS`` per process and served stale-while-revalidate: a request
never waits on Argo CD once a value is cached (it gets the old value, marked with its age,
while one background thread per key refreshes it). Only a first read is waited for, and only
up to a deadline (:class:`NotReady`, a 503): the api-server also serves Airflow's UI and REST
API, whose threads must not pile up behind a hung Argo CD.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog
from base_platform.catalog.loader import environment as load_environment
from base_platform.catalog.models import Wave
from base_platform.pipelines.run_records import seconds_since
from base_platform.types import JSON

if TYPE_CHECKING:
    from base_platform.pipelines.run_records import RunRecord

CACHE_SECONDS = 10.0
ARGOCD_CALL_SECONDS = 4.0
"""Per HTTP call to Argo CD for the page, one attempt: the deploy DAGs keep their own retries."""
ARGOCD_WAIT_SECONDS = 2.0
"""How long a request with nothing cached waits for the first Argo CD read before a 503."""
READ_WAIT_SECONDS = 20.0
"""The same for the datasets' figures and the reports (local reads: Iceberg, files); these also
wait that long for a refresh their age started, so a breaker that just opened is what the page
shows, not the state of a minute ago (a hung Argo CD read, by contrast, is served stale at once)."""
RETRY_AFTER_SECONDS = 5
T = TypeVar("T")


class NotReady(Exception):
    """Nothing cached yet and the first read did not finish within the deadline."""

    def __init__(self, key: str, waited: float) -> None:
        super().__init__(f"{key}: no answer within {waited:g} s; a read is under way")
        self.key = key


class ReadFailed(Exception):
    """The first read of a key failed (with nothing cached): its error, until the next read is due."""


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A cached value with when it was read; ``stale`` once older than the cache's seconds or
    when a later refresh failed (``error``)."""

    value: T
    read_at: str
    age_seconds: float
    stale: bool
    error: str | None

    @property
    def up(self) -> bool:
        """The last read succeeded: the value is as new as reads get (else ``error`` says why not)."""
        return self.error is None


@dataclass
class _Entry:
    value: Any = None
    has_value: bool = False
    value_at: float = 0.0  # monotonic time of the value's read
    tried_at: float = 0.0  # of the last read, successful or not
    read_at: str = ""
    error: BaseException | None = None  # the last read's failure, newer than the value
    refresh: threading.Event | None = field(default=None)
    refresh_began: float = 0.0  # monotonic time the running refresh started


class TTLCache:
    """One value per key, refreshed at most once per ``seconds`` (monotonic clock), by one
    background thread per key; the lock is held only to look and to store, never during a read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def get(
        self, key: str, compute: Callable[[], T], wait: float = READ_WAIT_SECONDS, fresh_wait: float = 0.0
    ) -> T:
        return self.read(key, compute, wait, fresh_wait).value

    def read(
        self, key: str, compute: Callable[[], T], wait: float = READ_WAIT_SECONDS, fresh_wait: float = 0.0
    ) -> Cached[T]:
        """The cached value, stale at once rather than waiting on a refresh, or after waiting up
        to ``fresh_wait`` seconds for the refresh its age started; with nothing cached, the first
        read's, waited for up to ``wait`` seconds, else :class:`NotReady`. Both waits count from
        the refresh's start, not the request's: while a read hangs, only the requests of its
        first seconds wait, the later ones are answered at once. A failed first read raises its
        error until the next refresh is due."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            due = entry.refresh is None and (
                not (entry.has_value or entry.error) or time.monotonic() - entry.tried_at >= self.seconds
            )
            if due:
                entry.refresh, entry.refresh_began = threading.Event(), time.monotonic()
                threading.Thread(
                    target=self._refresh, args=(entry, compute), name=f"cache-refresh {key}", daemon=True
                ).start()
            running = entry.refresh
            if entry.has_value and (running is None or fresh_wait <= 0):
                return self._snapshot(entry)
            left = (fresh_wait if entry.has_value else wait) - (time.monotonic() - entry.refresh_began)
        if running is not None and left > 0:
            running.wait(left)
        with self._lock:
            if entry.has_value:
                return self._snapshot(entry)
            if entry.error is not None and entry.refresh is None:
                raise ReadFailed(f"{key}: {entry.error}") from entry.error
        raise NotReady(key, wait)

    def peek(self, key: str) -> Cached[Any] | None:
        """What :meth:`read` would return now, without starting a read: for /metrics to say how
        old the figures it just read are; None while the key was never read successfully."""
        with self._lock:
            entry = self._entries.get(key)
            return self._snapshot(entry) if entry is not None and entry.has_value else None

    def _refresh(self, entry: _Entry, compute: Callable[[], T]) -> None:
        try:
            value = compute()
        except Exception as exc:  # kept for the callers; a stale value stays served
            with self._lock:
                entry.error, entry.tried_at = exc, time.monotonic()
        else:
            with self._lock:
                entry.value, entry.has_value, entry.error = value, True, None
                entry.value_at = entry.tried_at = time.monotonic()
                entry.read_at = datetime.now(UTC).isoformat(timespec="seconds")
        finally:
            with self._lock:
                done, entry.refresh = entry.refresh, None
            if done is not None:
                done.set()

    def _snapshot(self, entry: _Entry) -> Cached[Any]:
        age = time.monotonic() - entry.value_at
        return Cached(
            value=entry.value,
            read_at=entry.read_at,
            age_seconds=round(max(age, 0.0), 1),
            stale=entry.error is not None or age >= self.seconds,
            error=str(entry.error) if entry.error is not None else None,
        )


CACHE = TTLCache(CACHE_SECONDS)


def _report_key(dag_id: str, name: str) -> str:
    return f"reports:{dag_id}:{name}"


SOURCES = {
    "argocd": "argocd:applications",
    "pipelines": "pipelines",
    "deploy": _report_key("platform_deploy", "deploy"),
    "drift": _report_key("platform_drift", "drift"),
}
"""The cached reads behind /metrics, by the ``source`` label its freshness gauges carry."""


def source(name: str) -> Cached[Any] | None:
    """The cache's metadata of one of :data:`SOURCES` (its value's age, whether its last read
    failed); None while it was never read successfully."""
    return CACHE.peek(SOURCES[name])


def platform_state(environment: str) -> JSON:
    """Every catalog component by wave, with its live sync, health and revision in
    ``environment``, and when Argo CD was read (``stale`` while a refresh is due or failed).

    :raises NotReady: nothing read yet, and Argo CD did not answer within ``ARGOCD_WAIT_SECONDS``.
    """
    catalog, env = default_catalog(), load_environment(environment)
    read: JSON = {"read_at": None, "age_seconds": None, "stale": True}
    problem: str | None = None
    try:
        cached = CACHE.read(SOURCES["argocd"], _read_applications, wait=ARGOCD_WAIT_SECONDS)
    except ReadFailed as exc:  # shown on the page rather than a 500: the catalog still draws
        items, problem = [], f"Argo CD did not answer: {exc.__cause__}"
    else:
        items = cached.value
        if cached.error:
            problem = f"Argo CD did not answer: {cached.error}"
        read = {"read_at": cached.read_at, "age_seconds": cached.age_seconds, "stale": cached.stale}
    # One Argo CD, one connection: an Application is this environment's when it deploys to this
    # environment's cluster for its component, as render_application writes it.
    servers = {c.name: env.clusters[c.cluster] for c in catalog.components}
    live = {
        app["metadata"]["name"]: app
        for app in items
        if ((app.get("spec") or {}).get("destination") or {}).get("server")
        == servers.get(app["metadata"]["name"])
    }
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
    } | read


def _read_applications() -> list[JSON]:
    """Every Application in Argo CD: one short call, no retries (the next refresh is the retry)."""
    with ArgoCDHook(timeout=ARGOCD_CALL_SECONDS, max_attempts=1) as hook:
        return list(hook.list_applications().get("items") or [])


def pipeline_rows() -> list[JSON]:
    """One row per dataset: its last run's figures and the GB/hour and quarantine rate of up to 30
    runs. The freshness age is the commit's age now, not when the figures were read: it keeps
    growing while that read is stale or failing, so a freshness alert still fires."""
    return [
        row | {"freshness_age_seconds": seconds_since(row["committed_at"]) if row["committed_at"] else None}
        for row in CACHE.get(SOURCES["pipelines"], _read_pipelines, fresh_wait=READ_WAIT_SECONDS)
    ]


def _read_pipelines() -> list[JSON]:
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.pipeline_management import breaker
    from base_platform.pipelines.spec import Freshness, load_pipelines

    rows, within = [], tables.shared_catalog()  # the process's: each one opened builds a database engine
    for pipeline in load_pipelines():
        spec = pipeline.spec
        table = tables.load(spec.name, within)
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


REPORTS_READ = 50  # the newest reports of a DAG looked at for each component's last verdict


def latest_report(dag_id: str, name: str, environment: str) -> JSON | None:
    """The newest ``<name>.json`` a DAG wrote for ``environment`` under the artifacts root
    (local roots only)."""
    reports = _reports(dag_id, name, environment)
    return reports[0] if reports else None


def last_verdicts(environment: str) -> dict[str, JSON]:
    """Each component's verdict in the newest platform_deploy run to ``environment`` that
    selected it, with that run."""
    found: dict[str, JSON] = {}
    for report in _reports("platform_deploy", "deploy", environment):
        for row in report.get("components") or []:
            if row["component"] not in found and row["verdict"] != "not run":
                found[row["component"]] = {
                    "verdict": row["verdict"],
                    "ok": row["ok"],
                    "run_id": report.get("run_id"),
                    "finished_at": report.get("finished_at"),
                }
    return found


def _reports(dag_id: str, name: str, environment: str) -> list[JSON]:
    reports = CACHE.get(
        _report_key(dag_id, name), lambda: _read_reports(dag_id, name), fresh_wait=READ_WAIT_SECONDS
    )
    return [report for report in reports if report.get("environment") == environment]


def _read_reports(dag_id: str, name: str) -> list[JSON]:
    """A DAG's ``<name>.json`` reports, newest first."""
    from base_platform.artifacts import artifacts_root

    folder = Path(artifacts_root().path) / dag_id
    paths = sorted(folder.glob(f"*/{name}.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [json.loads(path.read_text()) for path in reversed(paths[-REPORTS_READ:])]

"""The "BASE Platform" page in Airflow's UI: a FastAPI app the api-server mounts (see
``plugins/base_platform_ui.py``).

Airflow does not authenticate a plugin's app, so every route here does: the caller's Airflow
token (the UI's cookie, or a bearer token) must be valid (else 401), and each tab asks the auth
manager whether the user may read the DAGs behind it (else 403). With the FAB auth manager that
is ``config/roles.yaml``. The Argo CD token stays on the server: the browser gets only JSON.

Every route's body runs in the plugin's own threads (:func:`~base_platform.ui.threads.off_loop`),
so its Argo CD, Iceberg, file and permission reads never block the event loop that also serves
Airflow's own UI and REST API, nor take the thread pool Airflow's sync endpoints run in. What
Argo CD has not answered in time is a 503 with ``Retry-After``.

The page's own routes ignore a query parameter they do not take (Airflow's UI loads ``/``,
Prometheus' scrape config may add some; the page's script sends only ``environment``); the datasets
and features APIs refuse one (a 422 naming it), since a misspelt filter there reads as "unfiltered".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from base_platform.catalog.loader import ENVIRONMENTS, default_environment
from base_platform.ui.access import CurrentUser, MetricsCaller, may_read, refusals
from base_platform.ui.threads import in_pool, off_loop

PAGE = Path(__file__).with_name("page.html")
# the schema lists the catalog's environments; the route itself answers any other with a 400
Environment = Annotated[
    str | None,
    Query(
        description="a catalog environment; default: the deployment's",
        json_schema_extra={"enum": list(ENVIRONMENTS)},
    ),
]
PLATFORM_DAG = "platform_deploy"  # who may read the deploys may see the platform tab and /metrics


def tabs_for(user: Any) -> dict[str, Any]:
    from base_platform.pipelines.spec import load_pipelines

    datasets = [p.spec.name for p in load_pipelines() if may_read(user, f"pipeline_{p.spec.name}")]
    return {"platform": may_read(user, PLATFORM_DAG), "datasets": datasets}


def require_platform(user: Any) -> None:
    if not may_read(user, PLATFORM_DAG):
        raise HTTPException(403, "this role may not see the platform tab")


def known_environment(environment: str | None) -> str:
    """The environment asked for, else the deployment's; an unknown one is a 400 (before any read,
    so a made-up value costs no Argo CD call and no cache entry)."""
    if environment is None:
        return default_environment()
    if environment not in ENVIRONMENTS:
        raise HTTPException(400, f"unknown environment {environment!r}; known: {', '.join(ENVIRONMENTS)}")
    return environment


def metrics_body(environment: str) -> bytes:
    """/metrics' text: each source's figures, then at once its cache metadata, so the age and
    ``up`` exported are those of the value just read (a refresh may land between the two reads
    only if it was already under way)."""
    from base_platform.ui import metrics as prometheus
    from base_platform.ui import state

    platform, argocd = state.platform_state(environment), state.source("argocd")
    pipelines, pipelines_read = state.pipeline_rows(), state.source("pipelines")
    deploy = state.latest_report("platform_deploy", "deploy", environment)
    deploy_read = state.source("deploy")
    drift = state.latest_report("platform_drift", "drift", environment)
    drift_read = state.source("drift")
    sources = {"argocd": argocd, "pipelines": pipelines_read, "deploy": deploy_read, "drift": drift_read}
    return prometheus.render(platform, pipelines, deploy, drift, sources)


def create_app() -> FastAPI:
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from sqlalchemy.exc import OperationalError

    from base_platform.ui import datasets_api, features_api
    from base_platform.ui.state import RETRY_AFTER_SECONDS, NotReady, ReadFailed
    from base_platform.ui.threads import Busy

    default_environment()  # a deployment environment that is none fails here, at load, by name

    # every route refuses a caller without a valid token, and its schema says so
    app = FastAPI(
        title="BASE Platform", docs_url=None, redoc_url=None, openapi_url=None, responses=refusals(401, 503)
    )
    app.include_router(datasets_api.router)
    app.include_router(features_api.router)

    @app.exception_handler(OSError)  # storage or a catalog's database unreachable, mid-request
    @app.exception_handler(OperationalError)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # the type only: a driver's message may name hosts or paths a caller has no business seeing
        return JSONResponse(
            {"detail": f"the catalog or its storage did not answer ({type(exc).__name__}); try again"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(NotReady)
    @app.exception_handler(ReadFailed)  # a source that failed its first read (Iceberg's catalog down)
    @app.exception_handler(Busy)  # every plugin thread held (by hung reads) past the wait
    async def not_ready(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )

    @app.get("/", response_class=HTMLResponse)
    @off_loop
    def page(user: CurrentUser) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @app.get("/api/tabs")
    @off_loop
    def tabs(user: CurrentUser) -> dict[str, Any]:
        return {"user": str(user.get_name())} | tabs_for(user)

    @app.get("/api/platform", responses=refusals(400, 403, 503))
    @off_loop
    def platform(user: CurrentUser, environment: Environment = None) -> dict[str, Any]:
        """The environment's components; ``stale`` with ``age_seconds`` while a refresh runs."""
        from base_platform.catalog.loader import ENVIRONMENTS
        from base_platform.ui import state

        require_platform(user)
        environment = known_environment(environment)
        return state.platform_state(environment) | {
            "environments": list(ENVIRONMENTS),
            "deploy": state.latest_report("platform_deploy", "deploy", environment),
            "verdicts": state.last_verdicts(environment),
        }

    @app.get("/api/drift", responses=refusals(400, 403))
    @off_loop
    def drift(user: CurrentUser, environment: Environment = None) -> dict[str, Any]:
        """The environment's last drift report, each finding with its resources' field diffs."""
        from base_platform.ui import state

        require_platform(user)
        environment = known_environment(environment)
        empty = {"environment": environment, "findings": [], "counts": {}}
        return state.latest_report("platform_drift", "drift", environment) or empty

    @app.get("/api/pipelines")
    @off_loop
    def pipelines(user: CurrentUser) -> list[dict[str, Any]]:
        from base_platform.ui import state

        allowed = set(tabs_for(user)["datasets"])
        return [row for row in state.pipeline_rows() if row["dataset"] in allowed]

    @app.get("/api/pipelines/overview")
    @off_loop
    def overview(user: CurrentUser) -> list[dict[str, Any]]:
        """Every pipeline the user may read: schedule, paused, newest DAG run, snapshot, freshness,
        quarantine rate and GB/hour of the last published run, and its circuit breaker."""
        from base_platform.ui import state

        allowed = set(tabs_for(user)["datasets"])
        rows = [row for row in state.pipeline_rows() if row["dataset"] in allowed]
        runs = state.dag_runs([row["dag_id"] for row in rows])
        keep = [
            "dataset",
            "dag_id",
            "snapshot_id",
            "committed_at",
            "freshness_age_seconds",
            "freshness_slo_seconds",
            "quarantine_rate",
            "gb_per_hour",
            "breaker",
        ]
        return [{key: row[key] for key in keep} | runs.get(row["dag_id"], {}) for row in rows]

    @app.get("/metrics", response_class=PlainTextResponse, responses=refusals(400, 403, 503))
    @in_pool("metrics")
    def metrics(user: MetricsCaller, environment: Environment = None) -> Response:
        require_platform(user)
        body = metrics_body(known_environment(environment))
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

"""The "BASE Platform" page in Airflow's UI: a FastAPI app the api-server mounts (see
``plugins/base_platform_ui.py``).

Airflow does not authenticate a plugin's app, so every route here does: the caller's Airflow
token (the UI's cookie, or a bearer token) must be valid (else 401), and each tab asks the auth
manager whether the user may read the DAGs behind it (else 403). With the FAB auth manager that
is ``config/roles.yaml``. The Argo CD token stays on the server: the browser gets only JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from base_platform.catalog.loader import ENVIRONMENTS
from base_platform.ui.access import CurrentUser, MetricsCaller, may_read, refusals

PAGE = Path(__file__).with_name("page.html")
PLATFORM_DAG = "platform_deploy"  # who may read the deploys may see the platform tab and /metrics
EnvironmentName = Annotated[
    str, Query(pattern=f"^({'|'.join(ENVIRONMENTS)})$", description="a catalog environment")
]


def tabs_for(user: Any) -> dict[str, Any]:
    from base_platform.pipelines.spec import load_pipelines

    datasets = [p.spec.name for p in load_pipelines() if may_read(user, f"pipeline_{p.spec.name}")]
    return {"platform": may_read(user, PLATFORM_DAG), "datasets": datasets}


def require_platform(user: Any) -> None:
    if not may_read(user, PLATFORM_DAG):
        raise HTTPException(403, "this role may not see the platform tab")


def create_app() -> FastAPI:
    from base_platform.ui import datasets_api, features_api

    # every route refuses a caller without a valid token, and its schema says so
    app = FastAPI(
        title="BASE Platform", docs_url=None, redoc_url=None, openapi_url=None, responses=refusals(401)
    )
    app.include_router(datasets_api.router)
    app.include_router(features_api.router)

    @app.get("/", response_class=HTMLResponse)
    async def page(user: CurrentUser) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @app.get("/api/tabs")
    async def tabs(user: CurrentUser) -> dict[str, Any]:
        return {"user": str(user.get_name())} | tabs_for(user)

    @app.get("/api/platform", responses=refusals(400, 403, 503))
    async def platform(user: CurrentUser, environment: EnvironmentName = "dev") -> dict[str, Any]:
        from base_platform.catalog.loader import ENVIRONMENTS
        from base_platform.ui import state

        require_platform(user)
        if environment not in ENVIRONMENTS:
            raise HTTPException(400, f"unknown environment {environment!r}; known: {', '.join(ENVIRONMENTS)}")
        return state.platform_state(environment) | {
            "environments": list(ENVIRONMENTS),
            "deploy": state.latest_report("platform_deploy", "deploy"),
            "verdicts": state.last_verdicts(),
        }

    @app.get("/api/drift", responses=refusals(403))
    async def drift(user: CurrentUser) -> dict[str, Any]:
        from base_platform.ui import state

        require_platform(user)
        return state.latest_report("platform_drift", "drift") or {"findings": [], "counts": {}}

    @app.get("/api/pipelines")
    async def pipelines(user: CurrentUser) -> list[dict[str, Any]]:
        from base_platform.ui import state

        allowed = set(tabs_for(user)["datasets"])
        return [row for row in state.pipeline_rows() if row["dataset"] in allowed]

    @app.get("/api/pipelines/overview")
    def overview(user: CurrentUser) -> list[dict[str, Any]]:
        """Every pipeline the user may read: schedule, paused, newest DAG run, snapshot, freshness,
        quarantine rate and GB/hour of the last published run, and its circuit breaker (plain
        ``def``: it reads a database)."""
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

    @app.get("/metrics", response_class=PlainTextResponse, responses=refusals(403, 503))
    async def metrics(user: MetricsCaller, environment: EnvironmentName = "dev") -> Response:
        from base_platform.ui import metrics as prometheus
        from base_platform.ui import state

        require_platform(user)
        body = prometheus.render(
            state.platform_state(environment),
            state.pipeline_rows(),
            state.latest_report("platform_deploy", "deploy"),
            state.latest_report("platform_drift", "drift"),
        )
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

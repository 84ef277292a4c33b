"""data_distribution's read API: the datasets, their schemas and their rows, for any HTTP client.

Served by Airflow's api-server in the platform page's app (``/base-platform/api/datasets``), so
no new service runs. Airflow does not protect a plugin's routes: each one here takes the
caller's Airflow token (401 without one) and the dataset grants of the caller's roles in
``config/roles.yaml`` (403, and the dataset is missing from the listing). Rows come from
:mod:`base_platform.pipelines.data_distribution.serving`: filters pushed down to the Iceberg scan, ``as_of``,
cursor pages, JSON or Arrow IPC (``Accept: application/vnd.apache.arrow.stream``). The routes
are plain functions, so FastAPI runs the blocking scans in its thread pool.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from base_platform.ui.access import CurrentUser

ARROW_STREAM = "application/vnd.apache.arrow.stream"
router = APIRouter(prefix="/api/datasets")


@cache
def page_cache() -> Any:
    """One cache per api-server process, made on its first query."""
    from base_platform.pipelines.data_distribution.serving import page_cache_from_env

    return page_cache_from_env()


def readable(user: Any) -> dict[str, Any]:
    """Name -> pipeline, of the datasets the user's roles may read."""
    from base_platform.auth.roles import load_roles
    from base_platform.pipelines.spec import load_pipelines

    roles = load_roles().roles
    names = {role.name for role in getattr(user, "roles", None) or []}
    pipelines = {p.spec.name: p for p in load_pipelines()}
    if "Admin" in names:  # FAB's own Admin, for users made outside roles.yaml
        return pipelines
    return {
        name: pipeline
        for name, pipeline in pipelines.items()
        if any(roles[role].may_read_dataset(name) for role in names if role in roles)
    }


def granted(user: Any, name: str) -> Any:
    from base_platform.pipelines.spec import pipeline_named

    try:
        pipeline_named(name)
    except KeyError as exc:
        raise HTTPException(404, f"no dataset {name!r}") from exc
    pipeline = readable(user).get(name)
    if pipeline is None:
        raise HTTPException(403, f"your roles may not read {name!r}")
    return pipeline


@router.get("")
def datasets(user: CurrentUser) -> list[dict[str, Any]]:
    from base_platform.pipelines.data_storage import tables

    listed = []
    for name, pipeline in sorted(readable(user).items()):
        table = tables.load(name)
        snapshot = table.current_snapshot() if table is not None else None
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        last = tables.history(table, limit=1)
        listed.append(
            {
                "name": name,
                "description": pipeline.spec.description,
                "contract_version": pipeline.contract.version,
                "snapshot_id": snapshot.snapshot_id if snapshot else None,
                "rows": int(summary.get("total-records", 0)),
                "freshness": list(fresh) if last and (fresh := last[-1].freshness) is not None else None,
            }
        )
    return listed


@router.get("/{name}/schema")
def schema(name: str, user: CurrentUser) -> dict[str, Any]:
    from base_platform.pipelines.data_control import table_actions
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.metadata_discovery.registry import registry_entry

    pipeline = granted(user, name)
    try:
        table = table_actions.dataset_table(name)
    except table_actions.ControlError as exc:
        raise HTTPException(404, str(exc)) from exc
    entry = registry_entry(pipeline, table, tables.history(table, limit=1))
    keep = ("dataset", "description", "table", "contract", "partition_spec", "columns")
    return {key: entry[key] for key in keep} | {"primary_key": list(pipeline.contract.primary_key)}


@router.get("/{name}/rows")
def rows(
    name: str,
    user: CurrentUser,
    request: Request,
    columns: str | None = None,
    filter: Annotated[list[str] | None, Query()] = None,
    as_of: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
) -> Response:
    from base_platform.pipelines.data_control import table_actions
    from base_platform.pipelines.data_distribution import serving

    pipeline = granted(user, name)
    query = serving.Query(
        dataset=name,
        columns=tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else (),
        filters=tuple(filter or ()),
        as_of=as_of,
        limit=limit,
        cursor=cursor,
    )
    try:
        found = page_cache().get(pipeline, query)
    except (serving.QueryError, table_actions.ControlError) as exc:
        raise HTTPException(400, str(exc)) from exc
    facts = {
        "snapshot_id": found.snapshot_id,
        "next_cursor": found.next_cursor,
        "files_total": found.files_total,
        "files_planned": found.files_planned,
        "files_scanned": found.files_scanned,
    }
    if ARROW_STREAM in request.headers.get("accept", ""):
        headers = {f"X-Base-{k.replace('_', '-')}": str(v) for k, v in facts.items() if v is not None}
        return Response(serving.to_ipc(found.rows), media_type=ARROW_STREAM, headers=headers)
    return JSONResponse({"dataset": name, **facts, "rows": serving.to_json_rows(found.rows)})

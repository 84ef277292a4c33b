"""data_distribution's read API: the datasets, their schemas and their rows, for any HTTP client.

Served by Airflow's api-server in the platform page's app (``/base-platform/api/datasets``), so no
new service runs. Airflow does not protect a plugin's routes: each one here takes the caller's
Airflow token (401 without one) and the dataset grants of the caller's roles in
``config/roles.yaml``: a dataset the caller may not read is missing from the listing, and its routes
answer exactly as for one that does not exist (404), so they tell no one what exists. Every
parameter is typed (:class:`RowsParams`): a malformed one, or one no route takes (a misspelt
``fitler`` must not read as "unfiltered"), is a 422 that names it, one the data cannot answer (an
unknown column, a filter value not of the column's type, a cursor this server did not sign) a 400
whose detail starts with the parameter, a snapshot not on ``main``'s history a 404 that says why.
Rows come from :mod:`base_platform.pipelines.data_distribution.serving`: filters pushed down to the
Iceberg scan, ``as_of``, cursor pages, JSON or Arrow IPC as the ``Accept`` header prefers (q-values
and wildcards; neither acceptable: 406). The blocking scans run in the plugin's own threads
(:mod:`base_platform.ui.threads`), on one Iceberg catalog per process (``tables.shared_catalog``).
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from base_platform.pipelines.data_control.form_params import POINT
from base_platform.pipelines.data_distribution import MAX_LIMIT
from base_platform.ui.access import NO_PARAMS, CurrentUser, refusals
from base_platform.ui.threads import off_loop

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"
NAME = r"^[a-z][a-z0-9_]*$"  # a dataset's or a view's name, as config/pipelines spells them
# spaces around the commas, and an empty value for "all" (as_of: "now"), as before
COLUMNS = r"^( *[a-z][a-z0-9_]*( *, *[a-z][a-z0-9_]*)* *)?$"
MAX_FILTERS = 64
BINARY = {"type": "string", "format": "binary"}
MAX_TEXT = 4096  # a filter or a cursor: longer is no one's honest query
router = APIRouter(prefix="/api/datasets", responses=refusals(401, 404))
DatasetName = Annotated[str, Path(pattern=NAME, max_length=128, description="a dataset of config/pipelines")]


class NoParams(BaseModel):
    """The query of a route that takes none: any parameter is a 422 that names it, as on the others."""

    model_config = ConfigDict(extra="forbid")


class RowsParams(BaseModel):
    """The rows route's query parameters: a malformed or unknown one is a 422 that names it."""

    model_config = ConfigDict(extra="forbid")

    columns: str | None = Field(
        None, pattern=COLUMNS, max_length=MAX_TEXT, description="the columns to return, comma-separated"
    )
    filter: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(
        default_factory=list,
        max_length=MAX_FILTERS,
        description="<column><op><value>, op one of = < > <= >= in (a comma list); each one narrows",
    )
    as_of: str | None = Field(
        None,
        pattern=f"^$|{POINT.pattern}",
        max_length=64,
        description="a snapshot id of main's history, or a time with its zone",
    )
    limit: int = Field(1000, ge=1, le=MAX_LIMIT, description="rows per page")
    cursor: str | None = Field(None, max_length=MAX_TEXT, description="the next_cursor of the page before")


class DatasetEntry(BaseModel):
    """One dataset of the listing."""

    name: str
    description: str
    contract_version: str
    snapshot_id: int | None
    rows: int
    freshness: list[Any] | None


class RowsPage(BaseModel):
    """A page of rows as JSON (Arrow IPC carries the same facts as ``X-Base-*`` headers)."""

    dataset: str
    snapshot_id: int
    next_cursor: str | None
    files_total: int
    files_planned: int
    files_scanned: int
    rows: list[dict[str, Any]]


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
    """The dataset's pipeline, if the user may read it; one answer for missing and forbidden, so
    the API is no oracle of which datasets exist."""
    pipeline = readable(user).get(name)
    if pipeline is None:
        raise HTTPException(404, f"no dataset {name!r} that you may read")
    return pipeline


def media_type(accept: str | None) -> str:
    """JSON or Arrow IPC, whichever the ``Accept`` header prefers (JSON on a tie, or with no header);
    406 when it accepts neither. Werkzeug (Flask's, which the FAB provider brings) parses it: q-values,
    ``*/*`` and ``application/*``, the most specific range deciding (``application/json;q=0, */*``)."""
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    if not accept or not accept.strip():
        return JSON
    accepted = parse_accept_header(accept, MIMEAccept)
    as_json, as_arrow = accepted.quality(JSON), accepted.quality(ARROW_STREAM)
    if max(as_json, as_arrow) <= 0:
        raise HTTPException(406, f"Accept: {accept[:200]!r} takes neither {JSON} nor {ARROW_STREAM}")
    return ARROW_STREAM if as_arrow > as_json else JSON


@router.get("", responses=NO_PARAMS)
@off_loop
def datasets(user: CurrentUser, params: Annotated[NoParams, Query()]) -> list[DatasetEntry]:
    from base_platform.pipelines.data_storage import tables

    listed, within = [], tables.shared_catalog()
    for name, pipeline in sorted(readable(user).items()):
        table = tables.load(name, within)
        snapshot = table.current_snapshot() if table is not None else None
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        last = tables.history(table, limit=1)
        listed.append(
            DatasetEntry(
                name=name,
                description=pipeline.spec.description,
                contract_version=pipeline.contract.version,
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                rows=int(summary.get("total-records", 0)),
                freshness=list(fresh) if last and (fresh := last[-1].freshness) is not None else None,
            )
        )
    return listed


@router.get("/{name}/schema", responses=NO_PARAMS)
@off_loop
def schema(name: DatasetName, user: CurrentUser, params: Annotated[NoParams, Query()]) -> dict[str, Any]:
    from base_platform.pipelines.data_control import table_actions
    from base_platform.pipelines.data_storage import tables
    from base_platform.pipelines.metadata_discovery.registry import registry_entry

    pipeline = granted(user, name)
    try:
        table = table_actions.dataset_table(name, tables.shared_catalog())
    except table_actions.ControlError as exc:
        raise HTTPException(404, str(exc)) from exc
    entry = registry_entry(pipeline, table, tables.history(table, limit=1))
    keep = ("dataset", "description", "table", "contract", "partition_spec", "columns")
    return {key: entry[key] for key in keep} | {"primary_key": list(pipeline.contract.primary_key)}


@router.get(
    "/{name}/rows",
    response_model=None,
    responses=refusals(400, 406) | {200: {"model": RowsPage, "content": {ARROW_STREAM: {"schema": BINARY}}}},
)
@off_loop
def rows(
    name: DatasetName, user: CurrentUser, request: Request, params: Annotated[RowsParams, Query()]
) -> Response:
    from base_platform.pipelines.data_control import table_actions
    from base_platform.pipelines.data_distribution import serving
    from base_platform.pipelines.data_storage.tables import NotServed

    answer_as = media_type(request.headers.get("accept"))  # before any read: a 406 costs no scan
    pipeline = granted(user, name)
    query = serving.Query(
        dataset=name,
        columns=tuple(c.strip() for c in params.columns.split(",")) if params.columns else (),
        filters=tuple(params.filter),
        as_of=params.as_of,
        limit=params.limit,
        cursor=params.cursor,
    )
    try:
        found = page_cache().get(pipeline, query)
    except (NotServed, table_actions.ControlError) as exc:  # no table yet, or a snapshot not served
        raise HTTPException(404, str(exc)) from exc
    except serving.QueryError as exc:
        raise HTTPException(400, str(exc)) from exc
    facts = {
        "snapshot_id": found.snapshot_id,
        "next_cursor": found.next_cursor,
        "files_total": found.files_total,
        "files_planned": found.files_planned,
        "files_scanned": found.files_scanned,
    }
    vary = {"Vary": "Accept"}  # one URL, two bodies: a shared cache must key on Accept too
    if answer_as == ARROW_STREAM:
        headers = {f"X-Base-{k.replace('_', '-')}": str(v) for k, v in facts.items() if v is not None}
        return Response(serving.to_ipc(found.rows), media_type=ARROW_STREAM, headers=headers | vary)
    return JSONResponse({"dataset": name, **facts, "rows": serving.to_json_rows(found.rows)}, headers=vary)

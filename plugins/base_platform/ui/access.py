"""Who calls a route of our FastAPI apps: Airflow does not authenticate a plugin's app, so the
routes do, with Airflow's own token check and auth manager."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel


class Refusal(BaseModel):
    """The body of every refusal (FastAPI's ``HTTPException``): what was wrong, for a person."""

    detail: str


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route documents in its OpenAPI schema, so a client (and schemathesis) knows them."""
    said = {
        400: "a parameter is malformed or names nothing the data has; the detail names the parameter",
        401: "no valid Airflow token (bearer header or the UI's cookie)",
        403: "the caller's roles may not see this",
        404: "nothing of that name the caller may read, or a snapshot the API does not serve",
        503: "a source behind the route (Argo CD) has not answered yet: try again after Retry-After",
    }
    # JSON whatever the route's own media type (the page's HTML, /metrics' text), so no "model" here:
    # FastAPI would file the refusal's schema under the route's media type
    body = {"application/json": {"schema": Refusal.model_json_schema()}}
    return {code: {"description": said[code], "content": body} for code in codes}


async def current_user(request: Request) -> Any:
    """The Airflow user of the request (bearer token, else the UI's cookie), or 401: Airflow's own
    ``get_user``, imported when a request comes rather than in every process that loads plugins."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


CurrentUser = Annotated[Any, Depends(current_user)]


def may_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return bool(get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))

"""Who calls a route of our FastAPI apps: Airflow does not authenticate a plugin's app, so the
routes do, with Airflow's own token check and auth manager. ``/metrics`` also takes Prometheus'
scrape credential, which does not expire daily as an Airflow token does."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
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
        406: "the Accept header takes none of the route's media types; the detail names them",
        503: "a source behind the route has not answered yet, or the page's threads are busy: retry later",
    }
    # JSON whatever the route's own media type (the page's HTML, /metrics' text), so no "model" here:
    # FastAPI would file the refusal's schema under the route's media type
    body = {"application/json": {"schema": Refusal.model_json_schema()}}
    return {code: {"description": said[code], "content": body} for code in codes}


class Invalid(BaseModel):
    """One parameter FastAPI refused: where (``["query", "fitler"]``), and why."""

    loc: list[str | int]
    msg: str
    type: str


class InvalidParams(BaseModel):
    """FastAPI's 422 body, for the routes whose only parameters FastAPI does not list (none)."""

    detail: list[Invalid]


# a route that takes no query parameters refuses any (NoParams): FastAPI documents that 422 only on
# routes with parameters of their own, so these say it themselves
NO_PARAMS: dict[int | str, dict[str, Any]] = {
    422: {"description": "a query parameter the route does not take", "model": InvalidParams}
}


# An Airflow Variable, so an env var (AIRFLOW_VAR_BASE_METRICS_SCRAPE_SHA256), the secrets backend
# (Vault: airflow/variables/base_metrics_scrape_sha256) or the metadata DB may hold it: the SHA-256
# (hex) of each accepted scrape token, two during a rotation. The token itself is never here.
SCRAPE_HASHES_VARIABLE = "base_metrics_scrape_sha256"


async def current_user(request: Request) -> Any:
    """The Airflow user of the request (bearer token, else the UI's cookie), or 401: Airflow's own
    ``get_user``, imported when a request comes rather than in every process that loads plugins."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


CurrentUser = Annotated[Any, Depends(current_user)]


@dataclass(frozen=True)
class Scraper:
    """Prometheus, by the scrape credential. Only ``/metrics`` takes one (``MetricsCaller``), and it
    reads every figure /metrics exports, so :func:`may_read` lets it."""

    name: str = "metrics-scraper"

    def get_name(self) -> str:
        return self.name


def scrape_hashes() -> list[str]:
    """The configured SHA-256 hex digests (none: no scrape credential works). Reads the secrets
    backend or the DB, so a request calls it off the event loop."""
    from airflow.models.variable import Variable

    value = Variable.get_variable_from_secrets(key=SCRAPE_HASHES_VARIABLE) or ""
    return [h.lower() for h in re.split(r"[\s,]+", value) if re.fullmatch(r"[0-9a-fA-F]{64}", h)]


def cached_scrape_hashes() -> list[str]:
    """:func:`scrape_hashes`, read at most once per the page cache's 10 s, so a stream of bearers that
    only look like scrape tokens costs the secrets backend one read, not one each. Never older than
    that: past it, a request waits up to 2 s for the read its age started, and if that read has
    not answered (a hung Vault) it is a 503, so a digest removed from the Variable is refused
    within 10 s, never honoured from an old read.

    :raises NotReady: no current read of the digests within 2 s.
    """
    from base_platform.ui.state import ARGOCD_WAIT_SECONDS, CACHE, NotReady

    key = "scrape-hashes"
    read = CACHE.read(key, scrape_hashes, wait=ARGOCD_WAIT_SECONDS, fresh_wait=ARGOCD_WAIT_SECONDS)
    if read.stale:
        raise NotReady(key, ARGOCD_WAIT_SECONDS)
    hashes: list[str] = read.value
    return hashes


MIN_SCRAPE_TOKEN = 32  # characters: `secrets.token_urlsafe(32)` makes 43


def is_scrape_token(token: str, hashes: list[str]) -> bool:
    """Whether the token's SHA-256 is one configured, compared in constant time with each. A short
    one never is, whatever digest is configured (the empty string's, say)."""
    if len(token) < MIN_SCRAPE_TOKEN:
        return False
    digest = hashlib.sha256(token.encode()).hexdigest()
    return any([hmac.compare_digest(digest, known) for known in hashes])


async def metrics_caller(request: Request) -> Any:
    """``/metrics``'s caller: Prometheus with the scrape token, else an Airflow user as on every route.
    Any credential that is neither (wrong, expired, missing) is 401."""
    from airflow.api_fastapi.core_api.security import bearer_scheme

    from base_platform.ui.threads import run_blocking

    bearer = await bearer_scheme(request)
    token = bearer.credentials if bearer is not None else ""
    # an Airflow token (a JWT: two dots) never costs a secrets-backend read; nor does a short one
    scrape_shaped = len(token) >= MIN_SCRAPE_TOKEN and token.count(".") != 2
    if scrape_shaped and is_scrape_token(token, await run_blocking(cached_scrape_hashes, "metrics")):
        return Scraper()
    try:
        return await current_user(request)
    except HTTPException as exc:  # Airflow answers a token it cannot verify with 403
        if exc.status_code in (401, 403):
            raise HTTPException(401, "a valid scrape token or Airflow token is required") from exc
        raise


MetricsCaller = Annotated[Any, Depends(metrics_caller)]


def may_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    if isinstance(user, Scraper):
        return True
    return bool(get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))

"""``kind: http``: a paginated JSON API, read incrementally by a cursor field.

A run is one shard: every page after the last committed cursor value (``cursor_param`` asks the
API for the records after it; the API keeps those strictly after). Pages are followed by a token
in the body, an offset, or the ``Link`` header. Credentials come from the Airflow HTTP connection
(``extra.auth``: ``bearer``, ``basic`` or ``api_key``), never from the spec, and are never logged.
429, 5xx and connection errors are retried with backoff, honouring ``Retry-After``; any other
error fails the shard at once, naming the request. Nothing is committed until the run commits,
so a killed run's records are read again by the next one, and only the commit moves the cursor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pyarrow as pa
import tenacity

from base_platform.pipelines.data_ingestion.decoding import (
    RawBatch,
    Reject,
    SourceError,
    exact_json,
    raw_schema,
    record_values,
)
from base_platform.pipelines.data_ingestion.sources import Resume, span_shard
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.spec import HttpSource, Pipeline

log = logging.getLogger(__name__)
BACKOFF_SECONDS = 0.5  # the first wait without Retry-After; doubled per attempt, plus jitter
MAX_WAIT_SECONDS = 120  # the longest wait, whatever Retry-After asks
AUTH_KINDS = ("bearer", "basic", "api_key")
BACKOFF = tenacity.wait_exponential_jitter(multiplier=BACKOFF_SECONDS, max=MAX_WAIT_SECONDS)


class RetryableStatus(Exception):
    """A 429 or 5xx answer: worth another attempt, after ``retry_after`` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    source = _spec(pipeline)
    return [span_shard(0, "http", f"http://{source.connection}{source.path}", {"after": resume.position})]


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    """Each page as a batch, in the API's order."""
    source, names = _spec(pipeline), pipeline.contract.names
    params: dict[str, Any] | None = {
        **source.params,
        source.pagination.size_param: source.pagination.page_size,
    }
    after = (shard.span or {}).get("after")
    if after is not None and source.cursor_param and source.cursor and params is not None:
        params[source.cursor_param] = _cursor_text(pipeline, after)
    requested: set[str] = set()
    with _client(source) as client:
        url: str | None = source.path
        while url is not None:
            request = json.dumps([str(client.base_url.join(url)), params], sort_keys=True, default=str)
            if request in requested:
                raise SourceError(
                    f"GET {url}: the API sent this page's cursor or link again; refusing to loop"
                )
            if len(requested) == source.pagination.max_pages:
                if not source.cursor:  # the next run would start at page 1 again, and never get past
                    raise SourceError(f"{source.path}: more than pagination.max_pages pages, and no cursor")
                log.warning("%s: stopped after %d pages (pagination.max_pages)", source.path, len(requested))
                return
            requested.add(request)
            _same_origin(client, url)
            response = _get(client, url, params, source)
            body, records = _records(response, source)
            yield _batch(records, names)
            url, params = _next_page(source, response, body, records, params)


def _same_origin(client: Any, url: str) -> None:
    """A link to another scheme, host or port would receive the connection's credentials: refused."""
    target, base = client.base_url.join(url), client.base_url
    if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
        raise SourceError(
            f"the API links to {target.scheme}://{target.host}:{target.port}, not to its own origin: "
            "credentials are never sent to another origin"
        )


def _spec(pipeline: Pipeline) -> HttpSource:
    source = pipeline.spec.source
    assert isinstance(source, HttpSource), f"{pipeline.spec.name} reads {source.kind}, not http"
    return source


def _client(source: HttpSource) -> Any:
    """An httpx client on the connection's host with its credentials; the secret stays in memory."""
    import httpx
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(source.connection)
    host = conn.host or ""
    base = host if "://" in host else f"{conn.schema or 'http'}://{host}"
    if conn.port:
        base = f"{base.rstrip('/')}:{conn.port}"
    extra = conn.extra_dejson
    kind = extra.get("auth") or ("basic" if conn.login else "bearer" if conn.password else None)
    headers: dict[str, str] = {"Accept": "application/json"}
    auth = None
    if kind not in (None, *AUTH_KINDS):
        raise SourceError(f"connection {source.connection}: extra.auth must be one of {AUTH_KINDS}")
    if kind == "bearer":
        headers["Authorization"] = f"Bearer {conn.password}"
    elif kind == "api_key":
        headers[str(extra.get("header", "X-API-Key"))] = conn.password or ""
    elif kind == "basic":
        auth = httpx.BasicAuth(conn.login or "", conn.password or "")
    return httpx.Client(base_url=base, headers=headers, auth=auth, timeout=source.timeout_seconds)


def _get(client: Any, url: str, params: Mapping[str, Any] | None, source: HttpSource) -> Any:
    """One page, retried on 429, 5xx and connection errors; a request says its path, never its auth."""
    import httpx

    def attempt() -> httpx.Response:
        response: httpx.Response = client.get(url, params=params)
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableStatus(
                f"GET {response.request.url.path} answered {response.status_code}",
                _retry_after(response.headers.get("Retry-After")),
            )
        if response.is_error:
            raise SourceError(
                f"GET {response.request.url.path} answered {response.status_code}: {response.text[:200]}"
            )
        return response

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(source.retries + 1),
        wait=_wait,
        retry=tenacity.retry_if_exception_type((RetryableStatus, httpx.TransportError)),
        before_sleep=lambda state: log.warning(
            "%s (attempt %d); retrying",
            state.outcome.exception() if state.outcome else "",
            state.attempt_number,
        ),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except (RetryableStatus, httpx.TransportError) as exc:
        raise SourceError(f"{url}: gave up after {source.retries + 1} attempts: {exc}") from exc


def _wait(state: tenacity.RetryCallState) -> float:
    """``Retry-After`` when the answer said it, else exponential backoff with jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_WAIT_SECONDS)
    return float(BACKOFF(state))


def _retry_after(value: str | None) -> float | None:
    """RFC 9110 ``Retry-After``: seconds, or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _records(response: Any, source: HttpSource) -> tuple[Any, list[Any]]:
    """The page's body, and its records; numbers keep their exact text (``exact_json``)."""
    try:
        body: Any = exact_json(response.content)
    except (ValueError, RecursionError) as exc:
        raise SourceError(f"GET {response.request.url.path}: the answer is not JSON") from exc
    found = body
    for key in filter(None, source.records.split(".")):
        found = found.get(key) if isinstance(found, dict) else None
    if not isinstance(found, list):
        where = source.records or "the body"
        raise SourceError(f"GET {response.request.url.path}: {where} is not a list of records")
    return body, found


def _next_page(
    source: HttpSource, response: Any, body: Any, records: list[Any], params: dict[str, Any] | None
) -> tuple[str | None, dict[str, Any] | None]:
    """The next page's URL and query, or no URL after the last page."""
    pagination = source.pagination
    if pagination.type == "link":
        link = response.links.get("next", {}).get("url")
        return (link, None) if link else (None, None)  # the link carries the whole query
    if pagination.type == "offset":
        if len(records) < pagination.page_size:
            return None, None
        offset = int((params or {}).get(pagination.param, 0)) + len(records)
        return str(response.request.url.path), {**(params or {}), pagination.param: offset}
    token: Any = body
    for key in pagination.next.split("."):
        token = token.get(key) if isinstance(token, dict) else None
    if not token:
        return None, None
    return str(response.request.url.path), {**(params or {}), pagination.param: token}


def _batch(records: list[Any], names: Sequence[str]) -> RawBatch:
    """A page as the raw binary columns ingestion makes of a file; a record that cannot be a row
    is a reject with its JSON and the reason (``record_values``)."""
    columns: list[list[bytes | None]] = [[] for _ in names]
    rejects: list[Reject] = []
    for record in records:
        values = record_values(record, names)
        if isinstance(values, str):
            rejects.append(Reject(json.dumps(record).encode(), values))
            continue
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    arrays = [pa.array(column, pa.binary()) for column in columns]
    return RawBatch(pa.RecordBatch.from_arrays(arrays, schema=raw_schema(names)), rejects)


def _cursor_text(pipeline: Pipeline, position: Any) -> str:
    """The committed position as the API writes the cursor field (the contract column's format)."""
    column = pipeline.contract.column(_spec(pipeline).cursor or "")
    if column.type == "timestamp":
        return datetime.fromisoformat(position).strftime(column.format or "%Y-%m-%dT%H:%M:%S%z")
    if column.type == "date":
        return date.fromisoformat(position).strftime(column.format or "%Y-%m-%d")
    return str(position)

"""Sync and async hooks over the Argo CD REST API (see docs/argocd-gates.md).

Each API call is described once as an :class:`ApiCall`; :class:`ArgoCDHook` runs it with
``httpx.Client`` and :class:`ArgoCDAsyncHook` with ``httpx.AsyncClient``, so the two hooks
cannot drift apart. Only transport errors and 502/503/504 are retried; ``sync`` also
retries Argo CD's "another operation is already in progress". Every other error raises
:class:`ArgoCDAPIError` with the HTTP status and the server's own message.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog
import tenacity
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException

from base_platform.connections import aget_connection_patiently
from base_platform.types import JSON

# structlog, not stdlib logging: the triggerer only routes structlog events to task logs.
log = structlog.get_logger(logger_name=__name__)

RETRYABLE_STATUS_CODES = frozenset({502, 503, 504})
OPERATION_IN_PROGRESS = "another operation is already in progress"
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0
DEFAULT_BACKOFF_SECONDS = 1.0
DEFAULT_MAX_ATTEMPTS = 5

R = TypeVar("R")


class ArgoCDAPIError(AirflowException):
    """An error answer from Argo CD, carrying its HTTP status and message.

    :param status_code: HTTP status of the answer (0 when no answer came back).
    :param message: the server's message (``message`` or ``error`` of its body).
    :param method: HTTP method of the request.
    :param path: request path, without the host.
    """

    def __init__(self, status_code: int, message: str, method: str, path: str) -> None:
        super().__init__(f"Argo CD {method} {path} failed with HTTP {status_code}: {message}")
        # AirflowException types status_code as HTTPStatus; Argo CD's own codes are plain ints.
        self.status_code = status_code  # type: ignore[assignment]
        self.message = message
        self.method = method
        self.path = path

    @property
    def is_permanent(self) -> bool:
        """A client error that no retry will fix (not 408 or 429, and not the in-progress race)."""
        return (
            400 <= self.status_code < 500
            and self.status_code not in {408, 429}
            and not (self.is_operation_in_progress)
        )

    @property
    def is_operation_in_progress(self) -> bool:
        return self.status_code == 400 and OPERATION_IN_PROGRESS in self.message


@dataclass(frozen=True)
class ApiCall:
    """One REST request, described as plain data so both hooks can run it."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    retry_when_in_progress: bool = False


def error_from_response(response: httpx.Response) -> ArgoCDAPIError:
    """Build the typed error from Argo CD's ``{"error", "message", "code"}`` body."""
    message = ""
    try:
        payload = response.json()
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload.get("error") or "")
    except ValueError:
        pass
    if not message:
        message = response.text.strip()[:500] or response.reason_phrase
    request = response.request
    return ArgoCDAPIError(response.status_code, message, request.method, request.url.path)


def is_retryable(exc: BaseException, call: ApiCall) -> bool:
    """Retry connection-level failures, gateway errors and, for sync only, the in-progress race."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, ArgoCDAPIError):
        if exc.status_code in RETRYABLE_STATUS_CODES:
            return True
        return call.retry_when_in_progress and exc.is_operation_in_progress
    return False


def retry_policy(call: ApiCall, max_attempts: int, backoff_seconds: float) -> dict[str, Any]:
    """Keyword arguments for tenacity's ``Retrying``/``AsyncRetrying``, shared by both hooks."""
    return {
        "stop": tenacity.stop_after_attempt(max_attempts),
        "wait": tenacity.wait_exponential(multiplier=backoff_seconds, max=30),
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, call)),
        "reraise": True,
        "before_sleep": lambda state: log.warning(
            "Argo CD %s %s: attempt %d failed (%s); retrying",
            call.method,
            call.path,
            state.attempt_number,
            state.outcome.exception() if state.outcome else "unknown",
        ),
    }


def _check(response: httpx.Response) -> JSON:
    if response.status_code >= 400:
        raise error_from_response(response)
    if not response.content:
        return {}
    payload = response.json()
    return payload if isinstance(payload, dict) else {"items": payload}


@dataclass(frozen=True)
class ConnectionSettings:
    """What the hooks need from an Airflow connection, resolved once."""

    base_url: str
    token: str | None
    username: str | None
    password: str | None
    verify_ssl: bool
    timeout: float
    backoff_seconds: float

    @classmethod
    def from_connection(
        cls,
        conn: Any,
        verify_ssl: bool | None = None,
        timeout: float | None = None,
        backoff_seconds: float | None = None,
    ) -> ConnectionSettings:
        """Read host (a full URL or a bare host), token or login/password, and extras.

        A value passed by the caller beats the connection extra.
        """
        extra = conn.extra_dejson or {}
        host = (conn.host or "").rstrip("/")
        if not host:
            raise AirflowException(f"Connection {conn.conn_id!r} has no host for Argo CD")
        if urlsplit(host).scheme:
            base_url = host
        else:
            scheme = conn.schema or extra.get("scheme") or "https"
            base_url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if verify_ssl is None:
            verify_ssl = str(extra.get("verify_ssl", True)).lower() not in {"false", "0", "no"}
        token = extra.get("token") or (conn.password if not conn.login else None)
        return cls(
            base_url=base_url,
            token=token,
            username=conn.login or None,
            password=conn.password if conn.login else None,
            verify_ssl=verify_ssl,
            timeout=float(timeout or extra.get("timeout") or DEFAULT_REQUEST_TIMEOUT_SECONDS),
            backoff_seconds=float(backoff_seconds or extra.get("backoff_seconds") or DEFAULT_BACKOFF_SECONDS),
        )


def session_call(settings: ConnectionSettings) -> ApiCall:
    return ApiCall(
        "POST", "/api/v1/session", body={"username": settings.username, "password": settings.password}
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


class ArgoCDApiMixin(Generic[R]):
    """Every Argo CD call the project uses, defined once; ``R`` is the result or its awaitable."""

    def _run(self, call: ApiCall) -> R:
        raise NotImplementedError

    def version(self) -> R:
        return self._run(ApiCall("GET", "/api/version"))

    def list_applications(
        self, selector: str | None = None, projects: list[str] | None = None, name: str | None = None
    ) -> R:
        params = {"selector": selector or "", "name": name or ""}
        if projects:
            params["projects"] = ",".join(projects)
        return self._run(
            ApiCall("GET", "/api/v1/applications", params={k: v for k, v in params.items() if v})
        )

    def get_application(self, name: str, refresh: str | None = None) -> R:
        """:param refresh: ``normal`` or ``hard`` makes Argo CD reconcile before answering."""
        params = {"refresh": refresh} if refresh else {}
        return self._run(ApiCall("GET", f"/api/v1/applications/{name}", params=params))

    def upsert_application(self, application: JSON, validate: bool = True) -> R:
        params = {"upsert": "true", "validate": _bool(validate)}
        return self._run(ApiCall("POST", "/api/v1/applications", params=params, body=application))

    def sync_application(
        self,
        name: str,
        revision: str | None = None,
        prune: bool = False,
        dry_run: bool = False,
        resources: list[JSON] | None = None,
        sync_options: list[str] | None = None,
        retry_in_progress: bool = True,
        infos: list[dict[str, str]] | None = None,
    ) -> R:
        """Start a sync; retried while another operation is in progress, unless told not to.

        ``infos`` (name and value pairs) are kept with the operation, in its ``info``.
        """
        body: JSON = {"name": name, "prune": prune, "dryRun": dry_run}
        if infos:
            body["infos"] = infos
        if revision:
            body["revision"] = revision
        if resources:
            body["resources"] = resources
        if sync_options:
            body["syncOptions"] = {"items": sync_options}
        call = ApiCall(
            "POST", f"/api/v1/applications/{name}/sync", body=body, retry_when_in_progress=retry_in_progress
        )
        return self._run(call)

    def resource_tree(self, name: str) -> R:
        return self._run(ApiCall("GET", f"/api/v1/applications/{name}/resource-tree"))

    def managed_resources(self, name: str) -> R:
        return self._run(ApiCall("GET", f"/api/v1/applications/{name}/managed-resources"))

    def rollback_application(
        self, name: str, history_id: int, prune: bool = False, dry_run: bool = False
    ) -> R:
        """Start a rollback; retried while another operation is in progress, as sync is."""
        body = {"name": name, "id": history_id, "prune": prune, "dryRun": dry_run}
        path = f"/api/v1/applications/{name}/rollback"
        return self._run(ApiCall("POST", path, body=body, retry_when_in_progress=True))

    def terminate_operation(self, name: str) -> R:
        return self._run(ApiCall("DELETE", f"/api/v1/applications/{name}/operation"))

    def delete_application(
        self, name: str, cascade: bool = True, propagation_policy: str = "foreground"
    ) -> R:
        params = {"cascade": _bool(cascade), "propagationPolicy": propagation_policy}
        return self._run(ApiCall("DELETE", f"/api/v1/applications/{name}", params=params))

    def upsert_project(self, project: JSON) -> R:
        return self._run(ApiCall("POST", "/api/v1/projects", body={"project": project, "upsert": True}))

    def events(self, name: str) -> R:
        return self._run(ApiCall("GET", f"/api/v1/applications/{name}/events"))

    def list_projects(self) -> R:
        return self._run(ApiCall("GET", "/api/v1/projects"))

    def list_accounts(self) -> R:
        return self._run(ApiCall("GET", "/api/v1/account"))


class _ArgoCDHookBase(BaseHook):
    conn_name_attr = "argocd_conn_id"
    default_conn_name = "argocd_default"
    conn_type = "argocd"
    hook_name = "Argo CD"

    def __init__(
        self,
        argocd_conn_id: str = default_conn_name,
        verify_ssl: bool | None = None,
        timeout: float | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float | None = None,
    ) -> None:
        """:param argocd_conn_id: Airflow connection with the API URL and a token or login.
        :param verify_ssl: overrides the connection extra ``verify_ssl``.
        :param timeout: seconds per HTTP call; overrides the extra ``timeout``.
        :param max_attempts: attempts for retryable failures.
        :param backoff_seconds: first backoff (default: the extra ``backoff_seconds``, else 1 s);
            doubles each attempt, capped at 30 s.
        """
        super().__init__()
        self.argocd_conn_id = argocd_conn_id
        self._verify_ssl = verify_ssl
        self._timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "API URL", "password": "API token (or password with a login)"},
            "placeholders": {"host": "https://argocd.example.com", "extra": '{"verify_ssl": true}'},
        }

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


class ArgoCDHook(ArgoCDApiMixin[JSON], _ArgoCDHookBase):
    """Blocking hook, for operators and poke-mode sensors."""

    @cached_property
    def settings(self) -> ConnectionSettings:
        conn = self.get_connection(self.argocd_conn_id)
        return ConnectionSettings.from_connection(conn, self._verify_ssl, self._timeout, self.backoff_seconds)

    @cached_property
    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.settings.base_url, verify=self.settings.verify_ssl, timeout=self.settings.timeout
        )

    @cached_property
    def _token(self) -> str | None:
        if self.settings.token or not self.settings.username:
            return self.settings.token
        return str(self._send(session_call(self.settings), token=None)["token"])

    def _send(self, call: ApiCall, token: str | None) -> JSON:
        for attempt in tenacity.Retrying(
            **retry_policy(call, self.max_attempts, self.settings.backoff_seconds)
        ):
            with attempt:
                response = self.client.request(
                    call.method, call.path, params=call.params, json=call.body, headers=self._headers(token)
                )
                return _check(response)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _run(self, call: ApiCall) -> JSON:
        return self._send(call, self._token)

    def application_exists(self, name: str) -> bool:
        """Argo CD answers 403 for a missing app; the list endpoint tells the truth."""
        return bool(self.list_applications(name=name).get("items"))

    def is_missing(self, exc: ArgoCDAPIError, name: str) -> bool:
        """Whether an error on ``name`` means the app does not exist (403 does not say)."""
        return exc.status_code in {403, 404} and not self.application_exists(name)

    def find_application(self, name: str) -> JSON | None:
        """The Application, or None when it does not exist; other errors raise."""
        try:
            return self.get_application(name)
        except ArgoCDAPIError as exc:
            if self.is_missing(exc, name):
                return None
            raise

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, f"Argo CD {self.version().get('Version', 'unknown')}"
        except (ArgoCDAPIError, httpx.HTTPError) as exc:
            return False, str(exc)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    def __enter__(self) -> ArgoCDHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArgoCDAsyncHook(ArgoCDApiMixin[Awaitable[JSON]], _ArgoCDHookBase):
    """Non-blocking hook for triggers: the connection is fetched asynchronously, and one HTTP
    client serves every call until :meth:`aclose` (use ``async with``)."""

    _settings: ConnectionSettings | None = None
    _token_value: str | None = None
    _client: httpx.AsyncClient | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = await aget_connection_patiently(self.argocd_conn_id)
            self._settings = ConnectionSettings.from_connection(
                conn, self._verify_ssl, self._timeout, self.backoff_seconds
            )
        return self._settings

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            settings = await self.get_settings()
            self._client = httpx.AsyncClient(
                base_url=settings.base_url, verify=settings.verify_ssl, timeout=settings.timeout
            )
        return self._client

    async def _send(self, call: ApiCall, token: str | None) -> JSON:
        client = await self._http()
        policy = retry_policy(call, self.max_attempts, (await self.get_settings()).backoff_seconds)
        async for attempt in tenacity.AsyncRetrying(**policy):
            with attempt:
                response = await client.request(
                    call.method, call.path, params=call.params, json=call.body, headers=self._headers(token)
                )
                return _check(response)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _get_token(self) -> str | None:
        settings = await self.get_settings()
        if settings.token or not settings.username:
            return settings.token
        if self._token_value is None:
            self._token_value = str((await self._send(session_call(settings), token=None))["token"])
        return self._token_value

    async def _run_async(self, call: ApiCall) -> JSON:
        return await self._send(call, await self._get_token())

    def _run(self, call: ApiCall) -> Awaitable[JSON]:
        return self._run_async(call)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> ArgoCDAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "ApiCall",
    "ArgoCDAPIError",
    "ArgoCDAsyncHook",
    "ArgoCDHook",
    "ConnectionSettings",
]

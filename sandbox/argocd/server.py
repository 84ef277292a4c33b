"""HTTP layer of the Argo CD SIMULATOR: routes, auth, content-type rule, injected 5xx.

Errors use Argo CD's body ``{"error", "message", "code", "details"}``. The ``/sandbox/*``
routes exist only here, to let tests inject faults deterministically.
"""

from __future__ import annotations

import json
import random
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.argocd import views
from sandbox.argocd.scenario import Drift, Scenario, load_scenario
from sandbox.argocd.state import JSON, ApiError, Store
from sandbox.common import Handler, routes

VERSION = {
    "Version": "v3.5.1+sandbox",
    "BuildDate": "2026-10-01T00:00:00Z",
    "GitCommit": "109ca7ca71139e514114499d294a492e7910a965",
    "GitTreeState": "clean",
    "GoVersion": "go1.25.1",
    "Compiler": "gc",
    "Platform": "linux/amd64",
}
PUBLIC_PATHS = frozenset({"/api/version", "/api/v1/session", "/healthz"})


def error_response(err: ApiError) -> JSONResponse:
    body = {"error": err.message, "message": err.message, "code": err.grpc_code, "details": []}
    return JSONResponse(body, status_code=err.http_status)


class Simulator:
    """Holds the store, tokens and fault plan; builds the Starlette app."""

    def __init__(self, scenario: Scenario) -> None:
        self.start(scenario)

    def start(self, scenario: Scenario) -> None:
        """Begin ``scenario`` from nothing: no apps but its own, no faults, no tokens but its own."""
        self.store = Store(scenario)
        self.tokens = set(scenario.tokens)
        self.random = random.Random(scenario.seed)
        self.error_rate = scenario.error_rate_5xx
        self.faults: list[JSON] = []

    # ---- cross-cutting rules ------------------------------------------------------------
    def _injected_fault(self, request: Request) -> Response | None:
        for fault in self.faults:
            if (
                request.url.path.startswith(fault["path"])
                and fault.get("method", request.method) == request.method
            ):
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                if int(fault["status"]) == 400:
                    return error_response(ApiError(400, 9, str(fault.get("message", "injected"))))
                return Response("upstream connect error", status_code=int(fault["status"]))
        if (
            self.error_rate
            and request.url.path.startswith("/api/v1/")
            and self.random.random() < self.error_rate
        ):
            return error_response(ApiError(503, 14, "the server is currently unable to handle the request"))
        return None

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bearer ") and header.removeprefix("Bearer ") in self.tokens

    async def dispatch(self, request: Request, handler: Handler) -> Response:
        path = request.url.path
        if path.startswith("/sandbox/"):
            return await handler(request)
        if request.method != "GET" and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return error_response(
                ApiError(415, 3, "unsupported media type: Content-Type must be application/json")
            )
        if path not in PUBLIC_PATHS and not self._authorised(request):
            return error_response(ApiError(401, 16, "no session information"))
        fault = self._injected_fault(request)
        if fault is not None:
            return fault
        try:
            with self.store.lock:
                return await handler(request)
        except ApiError as err:
            return error_response(err)

    # ---- handlers -------------------------------------------------------------------------
    async def version(self, request: Request) -> Response:
        return JSONResponse(VERSION)

    async def session(self, request: Request) -> Response:
        body = await _body(request)
        users, username = self.store.scenario.users, str(body.get("username"))
        if users.get(username) != body.get("password") or not body.get("password"):
            raise ApiError(401, 16, "Invalid username or password")
        if username in self.store.scenario.disabled_accounts:
            raise ApiError(401, 16, f"Account {username} is disabled")
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return JSONResponse({"token": token})

    async def list_apps(self, request: Request) -> Response:
        now = self.store.clock()
        name, projects = request.query_params.get("name"), request.query_params.get("projects")
        wanted = set(projects.split(",")) if projects else None
        items = [
            views.application(app, now)
            for app in self.store.visible()
            if (not name or app.name == name) and (wanted is None or app.spec.get("project") in wanted)
        ]
        return JSONResponse(
            {"metadata": {"resourceVersion": self.store.next_resource_version()}, "items": items}
        )

    async def get_app(self, request: Request) -> Response:
        app = self.store.get(request.path_params["name"])
        now = self.store.clock()
        if app.stale_view is not None and now < app.stale_until:
            return JSONResponse(app.stale_view)
        return JSONResponse(views.application(app, now))

    async def upsert_app(self, request: Request) -> Response:
        upsert = request.query_params.get("upsert") == "true"
        app = self.store.upsert(await _body(request), upsert)
        return JSONResponse(views.application(app, self.store.clock()))

    async def sync(self, request: Request) -> Response:
        app = self.store.get(request.path_params["name"], "sync")
        body = await _body(request)
        before = views.application(app, self.store.clock())
        self.store.start_operation(
            app,
            body.get("revision") or None,
            bool(body.get("dryRun")),
            bool(body.get("prune")),
            before,
            info=[{"name": str(i.get("name")), "value": str(i.get("value"))} for i in body.get("infos", [])],
        )
        return JSONResponse(views.application(app, self.store.clock()))

    async def rollback(self, request: Request) -> Response:
        app = self.store.get(request.path_params["name"], "sync")
        body = await _body(request)
        before = views.application(app, self.store.clock())
        self.store.rollback(
            app, int(body.get("id", 0)), bool(body.get("dryRun")), bool(body.get("prune")), before
        )
        return JSONResponse(views.application(app, self.store.clock()))

    async def terminate(self, request: Request) -> Response:
        self.store.terminate(self.store.get(request.path_params["name"], "sync"))
        return JSONResponse({})

    async def delete_app(self, request: Request) -> Response:
        app = self.store.get(request.path_params["name"], "delete")
        self.store.delete(app, request.query_params.get("cascade", "true") != "false")
        return JSONResponse({})

    async def resource_tree(self, request: Request) -> Response:
        return JSONResponse(views.resource_tree(self.store.get(request.path_params["name"])))

    async def managed_resources(self, request: Request) -> Response:
        return JSONResponse(views.managed_resources(self.store.get(request.path_params["name"])))

    async def events(self, request: Request) -> Response:
        return JSONResponse(views.events(self.store.get(request.path_params["name"])))

    async def list_projects(self, request: Request) -> Response:
        return JSONResponse(
            {"metadata": {}, "items": [self.store.projects[k] for k in sorted(self.store.projects)]}
        )

    async def upsert_project(self, request: Request) -> Response:
        return JSONResponse(self.store.upsert_project(await _body(request)))

    def _account(self, name: str) -> JSON:
        return {
            "name": name,
            "enabled": name not in self.store.scenario.disabled_accounts,
            "capabilities": ["login"] if name == "admin" else ["apiKey", "login"],
            "tokens": [],
        }

    async def list_accounts(self, request: Request) -> Response:
        return JSONResponse({"items": [self._account(n) for n in sorted(self.store.scenario.users)]})

    async def get_account(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.store.scenario.users:
            raise ApiError(404, 5, f"account '{name}' does not exist")
        return JSONResponse(self._account(name))

    async def add_drift(self, request: Request) -> Response:
        """Simulator-only: ``{"app", "kind", "name"?, "live", "target"}`` drifts a resource now."""
        body = json.loads(await request.body())
        with self.store.lock:
            try:
                app = self.store.get(str(body.pop("app")))
            except ApiError as err:
                return error_response(err)
            self.store.inject_drift(app, Drift.model_validate(body))
        return JSONResponse({"app": app.name, "drifted": len(app.active_drift)})

    async def add_fault(self, request: Request) -> Response:
        """Simulator-only: the next ``count`` requests under ``path`` answer ``status``."""
        fault = json.loads(await request.body())
        fault.setdefault("count", 1)
        self.faults.append(fault)
        return JSONResponse({"faults": len(self.faults)})

    async def reset(self, request: Request) -> Response:
        """Simulator-only: ``{"scenario": file or name}`` starts that scenario over, in this process
        (a test suite reuses one simulator instead of starting one per test)."""
        try:
            self.start(load_scenario((await _body(request)).get("scenario")))
        except ValueError as exc:
            return error_response(ApiError(400, 3, str(exc)))
        return JSONResponse({"apps": len(self.store.apps)})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "simulator": "argocd"})

    def routes(self) -> list[Route]:
        table: list[tuple[str, Handler, list[str]]] = [
            ("/healthz", self.healthz, ["GET"]),
            ("/api/version", self.version, ["GET"]),
            ("/api/v1/session", self.session, ["POST"]),
            ("/api/v1/applications", self.list_apps, ["GET"]),
            ("/api/v1/applications", self.upsert_app, ["POST"]),
            ("/api/v1/applications/{name}", self.get_app, ["GET"]),
            ("/api/v1/applications/{name}", self.delete_app, ["DELETE"]),
            ("/api/v1/applications/{name}/sync", self.sync, ["POST"]),
            ("/api/v1/applications/{name}/rollback", self.rollback, ["POST"]),
            ("/api/v1/applications/{name}/operation", self.terminate, ["DELETE"]),
            ("/api/v1/applications/{name}/resource-tree", self.resource_tree, ["GET"]),
            ("/api/v1/applications/{name}/managed-resources", self.managed_resources, ["GET"]),
            ("/api/v1/applications/{name}/events", self.events, ["GET"]),
            ("/api/v1/projects", self.list_projects, ["GET"]),
            ("/api/v1/projects", self.upsert_project, ["POST"]),
            ("/api/v1/account", self.list_accounts, ["GET"]),
            ("/api/v1/account/{name}", self.get_account, ["GET"]),
            ("/sandbox/faults", self.add_fault, ["POST"]),
            ("/sandbox/drift", self.add_drift, ["POST"]),
            ("/sandbox/reset", self.reset, ["POST"]),
        ]
        return routes(table, self.dispatch)

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ApiError(400, 3, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, 3, "request body must be a JSON object")
    return body

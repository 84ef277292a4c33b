"""HTTP layer and state of the Vault SIMULATOR, as ../shared/contracts/VAULT.md describes it.

Errors are ``{"errors": [...]}`` with content type ``application/json``; a sealed server
answers 503 to everything but sys/health and sys/seal-status. ``/sandbox/*`` routes exist
only here, so tests can seal and unseal it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.common import Handler, routes
from sandbox.vault.scenario import Scenario, load_scenario

JSON = dict[str, Any]
VERSION = "1.15.6+sandbox"
UNAUTHENTICATED = frozenset({"/v1/sys/health", "/v1/sys/seal-status"})


class VaultError(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(", ".join(errors))
        self.status = status
        self.errors = list(errors)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(data: JSON | None = None, auth: JSON | None = None, mount_type: str = "") -> JSON:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
        "mount_type": mount_type,
    }


@dataclass
class Token:
    accessor: str
    policies: tuple[str, ...]
    expires: float
    username: str = ""


@dataclass
class Secret:
    versions: list[JSON] = field(default_factory=list)
    created: str = field(default_factory=now_rfc3339)


class VaultSimulator:
    """Tokens, KV v2 secrets and transit keys, guarded by one lock."""

    def __init__(self, scenario: Scenario) -> None:
        self.lock = threading.RLock()
        self.start(scenario)

    def start(self, scenario: Scenario) -> None:
        """Begin ``scenario`` from nothing: its secrets, users and keys only, and new transit keys."""
        self.scenario = scenario
        self.sealed = scenario.sealed
        self.tokens: dict[str, Token] = {scenario.root_token: Token("root-accessor", ("root",), float("inf"))}
        self.kv: dict[str, Secret] = {}
        for where, data in scenario.kv.items():
            mount, _, path = where.partition("/")
            self._write(mount, path, data, None)
        self.transit = {name: [AESGCM.generate_key(256)] for name in scenario.transit_keys}

    # ---- auth -----------------------------------------------------------------------------
    def _token(self, request: Request) -> Token:
        token = self.tokens.get(request.headers.get("x-vault-token", ""))
        if token is None or token.expires < time.time():
            raise VaultError(403, "permission denied")
        return token

    def _allow(self, token: Token, path: str) -> None:
        if "root" in token.policies:
            return
        prefixes = [p for name in token.policies for p in self.scenario.policies.get(name, ())]
        if not any(p == "*" or path.startswith(p) for p in prefixes):
            raise VaultError(403, "1 error occurred:\n\t* permission denied\n\n")

    async def dispatch(self, request: Request, handler: Handler) -> Response:
        path = request.url.path
        try:
            if path.startswith("/sandbox/") or path in UNAUTHENTICATED:
                return await handler(request)
            if self.sealed or not self.scenario.initialized:
                raise VaultError(503, "Vault is sealed")
            with self.lock:
                return await handler(request)
        except VaultError as err:
            return JSONResponse({"errors": err.errors}, status_code=err.status)

    # ---- sys ------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        body = {
            "initialized": self.scenario.initialized,
            "sealed": self.sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
            "cluster_name": "vault-cluster-sandbox",
            "cluster_id": "5a4b4c1e-0000-4000-8000-000000000000",
        }
        status = 501 if not self.scenario.initialized else 503 if self.sealed else 200
        return JSONResponse(body, status_code=status)

    async def seal_status(self, request: Request) -> Response:
        return JSONResponse(
            {
                "type": "shamir",
                "initialized": self.scenario.initialized,
                "sealed": self.sealed,
                "t": 3,
                "n": 5,
                "progress": 0,
                "nonce": "",
                "version": VERSION,
                "build_date": "2026-10-01T00:00:00Z",
                "migration": False,
                "recovery_seal": False,
                "storage_type": "inmem",
            }
        )

    # ---- auth methods -----------------------------------------------------------------------
    async def userpass_login(self, request: Request) -> Response:
        username = request.path_params["username"]
        user = self.scenario.users.get(username)
        password = (await _body(request)).get("password")
        if user is None or not password or not secrets.compare_digest(user.password, str(password)):
            raise VaultError(400, "invalid username or password")
        client_token, accessor = f"hvs.{secrets.token_urlsafe(24)}", secrets.token_urlsafe(12)
        ttl = self.scenario.token_ttl_seconds
        policies = ("default", *user.policies)
        self.tokens[client_token] = Token(accessor, policies, time.time() + ttl, username)
        auth = {
            "client_token": client_token,
            "accessor": accessor,
            "policies": list(policies),
            "token_policies": list(policies),
            "metadata": {"username": username},
            "lease_duration": ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
        }
        return JSONResponse(envelope(auth=auth))

    async def lookup_self(self, request: Request) -> Response:
        token = self._token(request)
        ttl = 0 if token.expires == float("inf") else int(token.expires - time.time())
        data = {
            "id": request.headers["x-vault-token"],
            "accessor": token.accessor,
            "policies": list(token.policies),
            "ttl": ttl,
            "expire_time": None if ttl == 0 else datetime.fromtimestamp(token.expires, UTC).isoformat(),
            "renewable": ttl > 0,
            "display_name": f"userpass-{token.username}" if token.username else "root",
            "meta": {"username": token.username} if token.username else None,
        }
        return JSONResponse(envelope(data))

    # ---- KV v2 ------------------------------------------------------------------------------
    def _write(self, mount: str, path: str, data: JSON, cas: int | None) -> JSON:
        secret = self.kv.setdefault(f"{mount}/{path}", Secret())
        if cas is not None and cas != len(secret.versions):
            raise VaultError(
                400,
                "check-and-set parameter did not match the current version",
            )
        meta = {
            "created_time": now_rfc3339(),
            "deletion_time": "",
            "destroyed": False,
            "custom_metadata": {},
        }
        secret.versions.append({"data": dict(data), "metadata": meta})
        return meta | {"version": len(secret.versions)}

    async def kv_write(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"]
        self._allow(self._token(request), f"{mount}/{path}")
        body = await _body(request)
        if not isinstance(body.get("data"), dict):
            raise VaultError(400, "no data provided")
        cas = (body.get("options") or {}).get("cas")
        return JSONResponse(envelope(self._write(mount, path, body["data"], cas), mount_type="kv"))

    async def kv_read(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"]
        self._allow(self._token(request), f"{mount}/{path}")
        secret = self.kv.get(f"{mount}/{path}")
        if secret is None or not secret.versions:
            raise VaultError(404)
        wanted = int(request.query_params.get("version") or 0) or len(secret.versions)
        if not 1 <= wanted <= len(secret.versions):
            raise VaultError(404)
        version = secret.versions[wanted - 1]
        body = {"data": version["data"], "metadata": version["metadata"] | {"version": wanted}}
        return JSONResponse(envelope(body, mount_type="kv"))

    async def kv_metadata(self, request: Request) -> Response:
        mount, path = request.path_params["mount"], request.path_params["path"]
        self._allow(self._token(request), f"{mount}/{path}")
        secret = self.kv.get(f"{mount}/{path}")
        if secret is None:
            raise VaultError(404)
        versions = {str(i + 1): v["metadata"] for i, v in enumerate(secret.versions)}
        data = {
            "cas_required": False,
            "created_time": secret.created,
            "current_version": len(secret.versions),
            "custom_metadata": {},
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": 0,
            "updated_time": secret.versions[-1]["metadata"]["created_time"],
            "versions": versions,
        }
        return JSONResponse(envelope(data, mount_type="kv"))

    async def kv_destroy(self, request: Request) -> Response:
        """``DELETE /v1/<mount>/metadata/<path>``: every version and the metadata, for good."""
        mount, path = request.path_params["mount"], request.path_params["path"]
        self._allow(self._token(request), f"{mount}/{path}")
        self.kv.pop(f"{mount}/{path}", None)
        return Response(status_code=204)

    # ---- transit ----------------------------------------------------------------------------
    def _key(self, request: Request) -> tuple[str, list[bytes]]:
        mount, name = request.path_params["mount"], request.path_params["name"]
        self._allow(self._token(request), f"{mount}/{name}")
        if name not in self.transit:
            raise VaultError(400, f"encryption key not found: {name}")
        return name, self.transit[name]

    @staticmethod
    def _seal(keys: list[bytes], plaintext: bytes) -> str:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(keys[-1]).encrypt(nonce, plaintext, None)
        return f"vault:v{len(keys)}:" + base64.b64encode(nonce + sealed).decode()

    @staticmethod
    def _open(keys: list[bytes], ciphertext: str) -> bytes:
        try:
            _, version, payload = ciphertext.split(":", 2)
            raw = base64.b64decode(payload)
            key = keys[int(version.removeprefix("v")) - 1]
            return AESGCM(key).decrypt(raw[:12], raw[12:], None)
        except (ValueError, IndexError) as exc:
            raise VaultError(400, "invalid ciphertext: unable to decrypt") from exc

    async def encrypt(self, request: Request) -> Response:
        _, keys = self._key(request)
        body = await _body(request)
        try:
            if "batch_input" in body:
                results = [
                    {"ciphertext": self._seal(keys, base64.b64decode(i["plaintext"]))}
                    for i in body["batch_input"]
                ]
                return JSONResponse(envelope({"batch_results": results}, mount_type="transit"))
            ciphertext = self._seal(keys, base64.b64decode(body["plaintext"]))
        except (KeyError, ValueError) as exc:
            raise VaultError(400, "invalid request: plaintext must be base64") from exc
        return JSONResponse(
            envelope({"ciphertext": ciphertext, "key_version": len(keys)}, mount_type="transit")
        )

    async def decrypt(self, request: Request) -> Response:
        _, keys = self._key(request)
        body = await _body(request)
        if "batch_input" in body:
            results = [
                {"plaintext": base64.b64encode(self._open(keys, i["ciphertext"])).decode()}
                for i in body["batch_input"]
            ]
            return JSONResponse(envelope({"batch_results": results}, mount_type="transit"))
        plaintext = self._open(keys, str(body.get("ciphertext", "")))
        return JSONResponse(
            envelope({"plaintext": base64.b64encode(plaintext).decode()}, mount_type="transit")
        )

    async def datakey(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in {"plaintext", "wrapped"}:
            raise VaultError(400, f"invalid type {kind}: must be plaintext or wrapped")
        _, keys = self._key(request)
        bits = int((await _body(request)).get("bits", 256))
        if bits not in {128, 256, 512}:
            raise VaultError(400, "invalid bit length")
        data_key = secrets.token_bytes(bits // 8)
        data = {"ciphertext": self._seal(keys, data_key), "key_version": len(keys)}
        if kind == "plaintext":
            data["plaintext"] = base64.b64encode(data_key).decode()
        return JSONResponse(envelope(data, mount_type="transit"))

    # ---- simulator-only -----------------------------------------------------------------------
    async def set_seal(self, request: Request) -> Response:
        """Simulator-only: ``{"sealed": true}`` seals, ``false`` unseals."""
        self.sealed = bool(json.loads(await request.body() or b"{}").get("sealed", True))
        return JSONResponse({"sealed": self.sealed})

    async def reset(self, request: Request) -> Response:
        """Simulator-only: ``{"scenario": file or name}`` starts that scenario over, in this process."""
        try:
            scenario = load_scenario(json.loads(await request.body() or b"{}").get("scenario"))
        except ValueError as exc:
            return JSONResponse({"errors": [str(exc)]}, status_code=400)
        with self.lock:
            self.start(scenario)
        return JSONResponse({"sealed": self.sealed})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "simulator": "vault"})

    def routes(self) -> list[Route]:
        table: list[tuple[str, Handler, list[str]]] = [
            ("/sandbox/healthz", self.healthz, ["GET"]),
            ("/sandbox/seal", self.set_seal, ["POST"]),
            ("/sandbox/reset", self.reset, ["POST"]),
            ("/v1/sys/health", self.health, ["GET", "HEAD"]),
            ("/v1/sys/seal-status", self.seal_status, ["GET"]),
            ("/v1/auth/token/lookup-self", self.lookup_self, ["GET"]),
            ("/v1/auth/{mount}/login/{username}", self.userpass_login, ["POST", "PUT"]),
            ("/v1/{mount}/data/{path:path}", self.kv_read, ["GET"]),
            ("/v1/{mount}/data/{path:path}", self.kv_write, ["POST", "PUT"]),
            ("/v1/{mount}/metadata/{path:path}", self.kv_metadata, ["GET"]),
            ("/v1/{mount}/metadata/{path:path}", self.kv_destroy, ["DELETE"]),
            ("/v1/{mount}/encrypt/{name}", self.encrypt, ["POST", "PUT"]),
            ("/v1/{mount}/decrypt/{name}", self.decrypt, ["POST", "PUT"]),
            ("/v1/{mount}/datakey/{kind}/{name}", self.datakey, ["POST", "PUT"]),
        ]
        return routes(table, self.dispatch)

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())


async def _body(request: Request) -> JSON:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise VaultError(400, f"failed to parse JSON input: {exc}") from exc
    if not isinstance(body, dict):
        raise VaultError(400, "failed to parse JSON input: not an object")
    return body

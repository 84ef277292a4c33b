"""Vault through the hashicorp provider: health, KV reads and transit data keys.

The provider's ``VaultHook`` owns authentication (userpass, token, AppRole, Kubernetes...)
and retries 5xx; these helpers add only what the platform asks of Vault.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.hashicorp.hooks.vault import VaultHook

DEFAULT_CONN_ID = "vault_default"
HEALTH_TIMEOUT_SECONDS = 10


class VaultAccessError(Exception):
    """Vault refused or failed a request; the message is Vault's own."""


@dataclass(frozen=True)
class VaultHealth:
    url: str
    reachable: bool
    initialized: bool = False
    sealed: bool = True
    version: str = ""
    problem: str = ""

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    @property
    def ok(self) -> bool:
        return self.reachable and self.initialized and not self.sealed

    def describe(self) -> str:
        if not self.reachable:
            return f"Vault at {self.url} did not answer: {self.problem}"
        if not self.initialized:
            return f"Vault at {self.url} is not initialised"
        if self.sealed:
            return f"Vault at {self.url} is sealed"
        return f"Vault {self.version} at {self.url} is initialised and unsealed"


def vault_hook(conn_id: str = DEFAULT_CONN_ID) -> VaultHook:
    # hvac (under the provider) loads only when a task talks to Vault, never at DAG parse time
    from airflow.providers.hashicorp.hooks.vault import VaultHook

    return VaultHook(vault_conn_id=conn_id)


def vault_url(conn_id: str = DEFAULT_CONN_ID) -> str:
    """The server URL the connection points at (``https://`` when it uses TLS)."""
    return str(vault_hook(conn_id).vault_client.url)


def health(conn_id: str = DEFAULT_CONN_ID) -> VaultHealth:
    """``GET /v1/sys/health``. Unauthenticated, so a sealed Vault still answers why."""
    import hvac
    import requests

    url = vault_url(conn_id)
    client = hvac.Client(url=url, timeout=HEALTH_TIMEOUT_SECONDS)
    try:
        answer: Any = client.sys.read_health_status(method="GET")
    except requests.RequestException as exc:
        return VaultHealth(url, reachable=False, problem=str(exc))
    body = answer if isinstance(answer, dict) else _json(answer)
    if not body:
        return VaultHealth(url, reachable=False, problem=f"HTTP {answer.status_code} without a health body")
    return VaultHealth(
        url,
        reachable=True,
        initialized=bool(body.get("initialized")),
        sealed=bool(body.get("sealed", True)),
        version=str(body.get("version", "")),
    )


def read_secret(path: str, key: str, conn_id: str = DEFAULT_CONN_ID) -> str:
    """One key of a KV secret (v1 or v2, as the connection says), or a clear error."""
    import hvac

    try:
        secret = vault_hook(conn_id).get_secret(secret_path=path)
    except hvac.exceptions.VaultError as exc:
        raise VaultAccessError(f"reading {path} from Vault failed: {exc}") from exc
    if not secret or key not in secret:
        raise VaultAccessError(f"Vault secret {path} has no key {key!r}")
    return str(secret[key])


def destroy_secret(path: str, conn_id: str = DEFAULT_CONN_ID) -> None:
    """A KV v2 secret gone for good: every version and its metadata (a request's subject, once
    the erasure it named is done)."""
    import hvac

    hook = vault_hook(conn_id)
    try:
        hook.vault_client.client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=path, mount_point=hook.vault_client.mount_point
        )
    except hvac.exceptions.VaultError as exc:
        raise VaultAccessError(f"destroying {path} in Vault failed: {exc}") from exc


def _transit(
    operation: str, key_name: str, mount_point: str, conn_id: str, **arguments: Any
) -> dict[str, Any]:
    """One transit call through hvac; a Vault error names the operation and the key."""
    import hvac

    client = vault_hook(conn_id).get_conn()
    try:
        answer = getattr(client.secrets.transit, operation)(
            name=key_name, mount_point=mount_point, **arguments
        )
    except hvac.exceptions.VaultError as exc:
        raise VaultAccessError(f"transit {operation} with {mount_point}/{key_name} failed: {exc}") from exc
    data: dict[str, Any] = answer["data"]
    return data


def data_key(
    key_name: str, mount_point: str = "transit", conn_id: str = DEFAULT_CONN_ID
) -> tuple[bytes, str]:
    """A fresh data key from transit: the key itself and the same key wrapped by ``key_name``."""
    data = _transit("generate_data_key", key_name, mount_point, conn_id, key_type="plaintext")
    return base64.b64decode(data["plaintext"]), str(data["ciphertext"])


def transit_encrypt(
    key_name: str, plaintext: bytes, mount_point: str = "transit", conn_id: str = DEFAULT_CONN_ID
) -> str:
    """``plaintext`` wrapped by the transit key ``key_name`` (``vault:v1:...``)."""
    encoded = base64.b64encode(plaintext).decode()
    return str(_transit("encrypt_data", key_name, mount_point, conn_id, plaintext=encoded)["ciphertext"])


def transit_decrypt(
    key_name: str, ciphertext: str, mount_point: str = "transit", conn_id: str = DEFAULT_CONN_ID
) -> bytes:
    """The plaintext behind a ``vault:v1:...`` ciphertext of the transit key ``key_name``."""
    data = _transit("decrypt_data", key_name, mount_point, conn_id, ciphertext=ciphertext)
    return base64.b64decode(data["plaintext"])


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

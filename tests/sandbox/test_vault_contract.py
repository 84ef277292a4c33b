"""The Vault simulator answers hvac the way VAULT.md says, and its bodies match vault-openapi.json."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import hvac
import pytest

from tests.conftest import VAULT_PASSWORD
from tests.contracts import assert_valid_vault

pytestmark = pytest.mark.contract


@pytest.fixture
def vault(start_vault):
    return start_vault()


@pytest.fixture
def client(vault) -> hvac.Client:
    client = hvac.Client(url=vault.url)
    client.auth.userpass.login("airflow", VAULT_PASSWORD)
    return client


def test_health_and_seal_status_match_the_contract(contracts_dir: Path, vault) -> None:
    health = httpx.get(f"{vault.url}/v1/sys/health")
    assert health.status_code == 200
    assert {"initialized", "sealed", "standby", "version", "cluster_name"} <= health.json().keys()
    seal = httpx.get(f"{vault.url}/v1/sys/seal-status").json()
    assert_valid_vault(contracts_dir, "SealStatusResponse", seal)
    assert seal["sealed"] is False


def test_login_gives_a_token_that_looks_itself_up(client: hvac.Client) -> None:
    me = client.auth.token.lookup_self()["data"]
    assert "platform" in me["policies"]
    assert me["ttl"] > 0 and me["renewable"]


def test_bad_password_is_a_400_with_vaults_message(vault) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid username or password"):
        hvac.Client(url=vault.url).auth.userpass.login("airflow", "wrong")


def test_kv_v2_write_read_metadata_and_cas(contracts_dir: Path, client: hvac.Client) -> None:
    kv = client.secrets.kv.v2
    written = kv.create_or_update_secret("platform/demo", secret={"k": "v1"}, mount_point="secret")["data"]
    assert_valid_vault(contracts_dir, "KvV2WriteResponse", written)
    kv.create_or_update_secret("platform/demo", secret={"k": "v2"}, cas=1, mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret("platform/demo", secret={"k": "v3"}, cas=1, mount_point="secret")
    latest = kv.read_secret_version("platform/demo", mount_point="secret", raise_on_deleted_version=True)
    assert_valid_vault(contracts_dir, "KvV2ReadResponse", latest["data"])
    assert latest["data"]["data"] == {"k": "v2"} and latest["data"]["metadata"]["version"] == 2
    first = kv.read_secret_version(
        "platform/demo", version=1, mount_point="secret", raise_on_deleted_version=True
    )
    assert first["data"]["data"] == {"k": "v1"}
    meta = kv.read_secret_metadata("platform/demo", mount_point="secret")["data"]
    assert_valid_vault(contracts_dir, "KvV2ReadMetadataResponse", meta)
    assert meta["current_version"] == 2
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("platform/absent", mount_point="secret", raise_on_deleted_version=True)


def test_a_path_outside_the_users_policy_is_forbidden(client: hvac.Client) -> None:
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        client.secrets.kv.v2.read_secret_version("x", mount_point="other", raise_on_deleted_version=True)


def test_transit_round_trip_and_data_keys(client: hvac.Client) -> None:
    transit = client.secrets.transit
    plaintext = base64.b64encode(b"card 4242").decode()
    ciphertext = transit.encrypt_data("pipelines", plaintext)["data"]["ciphertext"]
    assert ciphertext.startswith("vault:v1:")
    assert transit.decrypt_data("pipelines", ciphertext)["data"]["plaintext"] == plaintext
    key = transit.generate_data_key("pipelines", key_type="plaintext")["data"]
    unwrapped = transit.decrypt_data("pipelines", key["ciphertext"])["data"]["plaintext"]
    assert unwrapped == key["plaintext"] and len(base64.b64decode(key["plaintext"])) == 32
    with pytest.raises(hvac.exceptions.InvalidRequest, match="encryption key not found"):
        transit.encrypt_data("absent", plaintext)


def test_a_sealed_vault_answers_503_to_everything_but_health(vault, client: hvac.Client) -> None:
    httpx.post(f"{vault.url}/sandbox/seal", json={"sealed": True}).raise_for_status()
    health = httpx.get(f"{vault.url}/v1/sys/health")
    assert health.status_code == 503 and health.json()["sealed"] is True
    assert httpx.get(f"{vault.url}/v1/sys/seal-status").json()["sealed"] is True
    with pytest.raises(hvac.exceptions.VaultDown, match="Vault is sealed"):
        client.secrets.kv.v2.read_secret_version(
            "platform/x", mount_point="secret", raise_on_deleted_version=True
        )
    error = httpx.get(f"{vault.url}/v1/auth/token/lookup-self")
    assert error.headers["content-type"] == "application/json" and error.json() == {
        "errors": ["Vault is sealed"]
    }

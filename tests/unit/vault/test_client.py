"""The Vault helpers against the Vault simulator, through the provider's VaultHook."""

from __future__ import annotations

import httpx
import pytest

from base_platform.vault import client as vault


def test_health_of_an_unsealed_vault(start_vault) -> None:
    start_vault()
    health = vault.health()
    assert health.ok and not health.tls
    assert "initialised and unsealed" in health.describe()


def test_health_says_sealed(start_vault) -> None:
    start_vault("sealed.yaml")
    health = vault.health()
    assert health.reachable and not health.ok
    assert health.describe().endswith("is sealed")


def test_health_of_an_unreachable_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VAULT_DEFAULT", "vault://airflow:x@127.0.0.1:9/secret?auth_type=userpass"
    )
    health = vault.health()
    assert not health.reachable and "did not answer" in health.describe()


def test_read_secret_and_its_errors(start_vault) -> None:
    start_vault()
    assert vault.read_secret("platform/pipelines", "hmac_key").startswith("sandbox-only")
    with pytest.raises(vault.VaultAccessError, match="has no key 'absent'"):
        vault.read_secret("platform/pipelines", "absent")


def test_read_secret_from_a_sealed_vault_fails_with_vaults_message(start_vault) -> None:
    sim = start_vault()
    httpx.post(f"{sim.url}/sandbox/seal", json={"sealed": True}).raise_for_status()
    with pytest.raises(vault.VaultAccessError, match="Vault is sealed"):
        vault.read_secret("platform/pipelines", "hmac_key")


def test_data_key_is_fresh_and_wrapped(start_vault) -> None:
    start_vault()
    key, wrapped = vault.data_key("pipelines")
    again, _ = vault.data_key("pipelines")
    assert len(key) == 32 and key != again and wrapped.startswith("vault:v1:")

"""Scenario files: every shipped one loads, and ``extends`` layers one on another."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sandbox.argocd.scenario import SCENARIO_DIR, load_scenario


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIO_DIR.glob("*.yaml")))
def test_every_shipped_scenario_loads(name: str) -> None:
    load_scenario(name)


def test_extends_merges_mappings_and_keeps_the_parent_rest(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "tokens: [t1]\ndefaults: {sync_seconds: 3, healthy_after_seconds: 5}\napps: {a: {sync_seconds: 1}}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\ndefaults: {healthy_after_seconds: 40}\napps: {b: {sync_seconds: 2}}\n"
    )
    child = load_scenario(tmp_path / "child.yaml")
    assert child.tokens == ("t1",)
    assert (child.defaults.sync_seconds, child.defaults.healthy_after_seconds) == (3, 40)
    assert set(child.apps) == {"a", "b"}


def test_an_error_in_an_extending_scenario_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text("extends: default.yaml\ndefaults: {sync_seconds: soon}\n")
    with pytest.raises(ValueError, match=r"child\.yaml: defaults\.sync_seconds"):
        load_scenario(tmp_path / "child.yaml")


def test_a_reset_starts_a_scenario_over_in_the_same_process(start_simulator, tmp_path: Path) -> None:
    sim = start_simulator({"tokens": ["sandbox-token"], "existing": {"web": {}}})
    sim.inject("/api/v1/applications", 503, count=5)
    (tmp_path / "empty.yaml").write_text("tokens: [sandbox-token]\n")
    with httpx.Client(base_url=sim.url) as client:
        assert (
            client.post("/sandbox/reset", json={"scenario": str(tmp_path / "empty.yaml")}).status_code == 200
        )
        with sim.client() as api:
            listed = api.get("/api/v1/applications")  # the injected faults went with the old scenario
            assert listed.status_code == 200 and listed.json()["items"] in (None, [])
        (tmp_path / "bad.yaml").write_text("defaults: {sync_secondz: 1}\n")  # misspelt
        refused = client.post("/sandbox/reset", json={"scenario": str(tmp_path / "bad.yaml")})
        assert refused.status_code == 400 and "bad.yaml" in refused.json()["message"]


def test_a_vault_reset_forgets_what_was_written(start_vault, tmp_path: Path) -> None:
    sim = start_vault()
    token = {"X-Vault-Token": "sandbox-root-token"}
    with httpx.Client(base_url=sim.url, headers=token) as client:
        assert client.post("/v1/secret/data/x", json={"data": {"k": "v"}}).status_code == 200
        assert client.get("/v1/secret/data/x").status_code == 200
        assert client.post("/sandbox/reset", json={"scenario": "default.yaml"}).status_code == 200
        assert client.get("/v1/secret/data/x").status_code == 404

"""Scenario files: every shipped one loads, and ``extends`` layers one on another."""

from __future__ import annotations

from pathlib import Path

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

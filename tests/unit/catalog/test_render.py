"""Rendered Applications and AppProjects: deterministic, contract-valid, least privilege."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from base_platform.catalog.loader import load_catalog, load_environment
from base_platform.catalog.render import project_names, render_application, render_project
from tests.contracts import assert_valid

ENVS = ["dev", "staging", "prod"]
SECRET_WORDS = ("password", "secret", "token", "privatekey")


@pytest.mark.contract
@pytest.mark.parametrize("env", ENVS)
def test_every_application_matches_the_contract(contracts_dir: Path, env: str) -> None:
    catalog, overlay = load_catalog(), load_environment(env)
    for component in catalog.components:
        app = render_application(component, overlay)
        assert_valid(contracts_dir, "v1alpha1Application", app)
        assert app["metadata"]["name"] == component.name
        assert app["spec"]["destination"] == {
            "server": overlay.clusters[component.cluster],
            "namespace": component.namespace,
        }
    for name in project_names(catalog):
        assert_valid(contracts_dir, "v1alpha1AppProject", render_project(name, catalog, overlay))


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.slow
def test_rendering_is_deterministic(env: str) -> None:
    catalog, overlay = load_catalog(), load_environment(env)
    first = [json.dumps(render_application(c, overlay), sort_keys=False) for c in catalog.components]
    second = [
        json.dumps(render_application(c, load_environment(env)), sort_keys=False) for c in catalog.components
    ]
    assert first == second


def test_overlay_values_reach_the_application() -> None:
    vault = load_catalog().component("vault")
    dev = {
        p["name"]: p["value"]
        for p in render_application(vault, load_environment("dev"))["spec"]["source"]["helm"]["parameters"]
    }
    prod = {
        p["name"]: p["value"]
        for p in render_application(vault, load_environment("prod"))["spec"]["source"]["helm"]["parameters"]
    }
    assert (dev["server.resources.requests.cpu"], prod["server.resources.requests.cpu"]) == ("100m", "500m")
    assert (dev["server.resources.requests.memory"], prod["server.resources.requests.memory"]) == (
        "256Mi",
        "1Gi",
    )
    assert prod["server.autoscaling.maxReplicas"] == "20"
    app = render_application(vault, load_environment("prod"), revision="abc123")
    assert app["spec"]["source"]["targetRevision"] == "abc123"


@pytest.mark.parametrize("env", ENVS)
def test_projects_are_least_privilege(env: str) -> None:
    catalog, overlay = load_catalog(), load_environment(env)
    assert project_names(catalog) == [
        "base-layer",
        "platform-apps",
        "platform-core",
        "platform-orchestration",
        "platform-shared",
    ]
    for name in project_names(catalog):
        spec = render_project(name, catalog, overlay)["spec"]
        assert spec["sourceRepos"] == [overlay.repo_url]
        used = {(overlay.clusters[c.cluster], c.namespace) for c in catalog.components if c.project == name}
        assert {(d["server"], d["namespace"]) for d in spec["destinations"]} == used
        assert "*" not in json.dumps(spec)


@pytest.mark.slow
def test_no_rendered_manifest_carries_a_secret() -> None:
    catalog = load_catalog()
    for env in ENVS:
        for component in catalog.components:
            text = json.dumps(render_application(component, load_environment(env))).lower()
            assert not any(word in text for word in SECRET_WORDS), component.name

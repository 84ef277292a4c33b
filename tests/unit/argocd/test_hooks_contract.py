"""Request bodies built by the hooks validate against argocd-swagger.json's request definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from base_platform.argocd.hooks import ApiCall, ArgoCDApiMixin
from tests.contracts import argocd_validator, assert_valid
from tests.unit.argocd.test_hooks import APP

pytestmark = pytest.mark.contract


class Recorder(ArgoCDApiMixin[ApiCall]):
    """Runs nothing: returns the call each API method describes."""

    def _run(self, call: ApiCall) -> ApiCall:
        return call


API = Recorder()
SWAGGER_PATHS = {
    "sync": ("/api/v1/applications/web/sync", "applicationApplicationSyncRequest"),
    "rollback": ("/api/v1/applications/web/rollback", "applicationApplicationRollbackRequest"),
    "project": ("/api/v1/projects", "projectProjectCreateRequest"),
    "upsert": ("/api/v1/applications", "v1alpha1Application"),
}


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        (
            "sync",
            API.sync_application(
                "web",
                revision="main",
                prune=True,
                dry_run=True,
                resources=[{"group": "apps", "kind": "Deployment", "name": "web"}],
                sync_options=["CreateNamespace=true"],
            ),
        ),
        ("rollback", API.rollback_application("web", history_id=3, prune=True)),
        (
            "project",
            API.upsert_project({"metadata": {"name": "p"}, "spec": {"sourceRepos": ["https://g/x.git"]}}),
        ),
        ("upsert", API.upsert_application(APP)),
    ],
)
def test_request_bodies_match_the_contract(contracts_dir: Path, kind: str, call: ApiCall) -> None:
    path, definition = SWAGGER_PATHS[kind]
    assert call.path == path and call.method == "POST"
    assert_valid(contracts_dir, definition, call.body)


def test_a_misspelt_field_is_caught(contracts_dir: Path) -> None:
    assert not argocd_validator(contracts_dir, "applicationApplicationSyncRequest").is_valid({"dryrun": True})


def test_query_parameters_match_the_contract(contracts_dir: Path) -> None:
    import json

    paths = json.loads((contracts_dir / "argocd-swagger.json").read_text())["paths"]

    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in paths[path][method]["parameters"] if p["in"] == "query"}

    assert set(API.delete_application("web").params) <= names("/api/v1/applications/{name}", "delete")
    assert set(API.upsert_application(APP).params) <= names("/api/v1/applications", "post")
    assert set(API.get_application("web", refresh="hard").params) <= names(
        "/api/v1/applications/{name}", "get"
    )
    assert set(API.list_applications(selector="a=b", projects=["p"], name="x").params) <= names(
        "/api/v1/applications", "get"
    )

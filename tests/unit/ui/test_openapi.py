"""Schemathesis over the platform app's own OpenAPI schema: every operation, called in-process with
a developer's and a data scientist's real token, answers with no 5xx and within its schema (its
status codes, content types and bodies), whatever the generated parameters."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from base_platform.ui.app import create_app
from tests.unit.ui.conftest import Callers

APP = create_app()
SCHEMA = schemathesis.openapi.from_dict(APP.openapi())
SCHEMA.app = APP  # called through an ASGI transport: no server, no port
# the data routes once more, with {name} drawn from what exists (the catalog fixture's dataset,
# config/features' view), so the filters, as_of, cursors and limits reach the scans and the
# page cache instead of stopping at a 404 for a random name
REAL_NAMES = {"/api/datasets/{name}": ["transactions"], "/api/features/{name}": ["account_spend"]}


def with_real_names(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["paths"] = {
        path: item
        for path, item in document["paths"].items()
        if any(path.startswith(prefix) for prefix in REAL_NAMES)
    }
    for path, item in document["paths"].items():
        names = next(names for prefix, names in REAL_NAMES.items() if path.startswith(prefix))
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if (parameter["in"], parameter["name"]) == ("path", "name"):
                    parameter["schema"] = {"type": "string", "enum": names}
    return document


DATA_SCHEMA = schemathesis.openapi.from_dict(with_real_names(APP.openapi()))
DATA_SCHEMA.app = APP
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ARGO_CD_BEHIND = {"/api/platform", "/metrics"}  # the routes that read Argo CD (none runs here)
OPERATIONS = {
    "/",
    "/api/tabs",
    "/api/platform",
    "/api/drift",
    "/api/pipelines",
    "/api/pipelines/overview",
    "/metrics",
    "/api/datasets",
    "/api/datasets/{name}/schema",
    "/api/datasets/{name}/rows",
    "/api/features",
    "/api/features/{name}/online",
}


def test_the_schema_names_every_operation_of_the_app() -> None:
    assert set(APP.openapi()["paths"]) == OPERATIONS


@pytest.mark.slow
@pytest.mark.parametrize("user", ["dev", "ds"])
@SCHEMA.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema_and_never_a_5xx(
    case: schemathesis.Case, user: str, callers: Callers, catalog: Path
) -> None:
    answer = case.call(headers=callers.headers(user))
    if case.operation.path in ARGO_CD_BEHIND and answer.status_code == 503:
        # the page does not wait on Argo CD: "not yet", with when to ask again, is no server error
        assert answer.headers.get("Retry-After"), answer.text
        case.validate_response(answer, excluded_checks=[not_a_server_error])
    else:
        case.validate_response(answer)


def test_the_data_routes_are_fuzzed_with_names_that_exist() -> None:
    assert set(with_real_names(APP.openapi())["paths"]) == {
        "/api/datasets/{name}/schema",
        "/api/datasets/{name}/rows",
        "/api/features/{name}/online",
    }


@pytest.mark.slow
@pytest.mark.parametrize("user", ["dev", "ds"])
@DATA_SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_data_routes_on_real_datasets_answer_within_their_schema_and_never_a_5xx(
    case: schemathesis.Case, user: str, callers: Callers, catalog: Path
) -> None:
    # a filter or cursor the schema cannot describe (a column that exists, a value of its type, a
    # signature) may still be a documented 400, so not Schemathesis' "schema-valid is accepted":
    # never a 5xx, always within the schema
    case.validate_response(case.call(headers=callers.headers(user)), checks=CONFORMANCE)

"""Schemathesis over the platform app's own OpenAPI schema: every operation, called in-process with
a developer's and a data scientist's real token, answers with no 5xx and within its schema (its
status codes, content types and bodies), whatever the generated parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from base_platform.ui.app import create_app
from tests.unit.ui.conftest import Callers

APP = create_app()
SCHEMA = schemathesis.openapi.from_dict(APP.openapi())
SCHEMA.app = APP  # called through an ASGI transport: no server, no port
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

"""Validators built from ../shared/contracts, shared by the contract tests."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

from base_platform.types import JSON


def _strict(definitions: JSON) -> JSON:
    """Forbid fields the contract does not define, so a misspelt field cannot pass.

    ``allOf`` parts are merged into their object first, since ``additionalProperties``
    does not see through ``allOf``.
    """
    strict = copy.deepcopy(definitions)
    for schema in strict.values():
        for part in schema.pop("allOf", []):
            ref = part.get("$ref", "").split("/")[-1]
            schema.setdefault("properties", {}).update(definitions.get(ref, {}).get("properties", {}))
        if schema.get("type") == "object" and schema.get("properties"):
            schema["additionalProperties"] = False
    return strict


@cache
def _swagger_definitions(path: Path) -> JSON:
    return _strict(json.loads(path.read_text())["definitions"])


def argocd_validator(contracts: Path, definition: str) -> Draft4Validator:
    definitions = _swagger_definitions(contracts / "argocd-swagger.json")
    assert definition in definitions, f"{definition} is not in argocd-swagger.json"
    return Draft4Validator({"$ref": f"#/definitions/{definition}", "definitions": definitions})


def assert_valid(contracts: Path, definition: str, instance: Any) -> None:
    errors = sorted(argocd_validator(contracts, definition).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{definition} at {list(e.path)}: {e.message}" for e in errors[:10])


@cache
def _openapi_schemas(path: Path) -> JSON:
    return _strict(json.loads(path.read_text())["components"]["schemas"])


def assert_valid_vault(contracts: Path, schema: str, instance: Any) -> None:
    """``instance`` matches ``components.schemas[schema]`` of vault-openapi.json (made strict)."""
    schemas = _openapi_schemas(contracts / "vault-openapi.json")
    assert schema in schemas, f"{schema} is not in vault-openapi.json"
    validator = Draft4Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": {"schemas": schemas}}
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{schema} at {list(e.path)}: {e.message}" for e in errors[:10])

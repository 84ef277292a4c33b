"""Which environment the page and /metrics show: the one asked for, else the deployment's."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from base_platform.ui.app import known_environment


@pytest.mark.parametrize(
    ("configured", "expected"), [("prod", "prod"), ("staging", "staging"), ("qa", "dev")]
)
def test_without_one_asked_the_deployments_environment_is_shown(
    monkeypatch: pytest.MonkeyPatch, configured: str, expected: str
) -> None:
    monkeypatch.setenv("BASE_PLATFORM_ENVIRONMENT", configured)
    assert known_environment(None) == expected
    assert known_environment("dev") == "dev"  # asked for beats configured


@pytest.mark.parametrize("asked", ["qa", "", "DEV", "dev ", "prod\n", "../prod", "dev,prod"])
def test_an_unknown_environment_is_a_400(asked: str) -> None:
    with pytest.raises(HTTPException) as refused:
        known_environment(asked)
    assert refused.value.status_code == 400

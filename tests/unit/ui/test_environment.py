"""Which environment the page and /metrics show: the one asked for, else the deployment's."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from base_platform.ui.app import known_environment
from tests.conftest import ROOT


@pytest.mark.parametrize("configured", ["prod", "staging", "dev"])
def test_without_one_asked_the_deployments_environment_is_shown(
    monkeypatch: pytest.MonkeyPatch, configured: str
) -> None:
    monkeypatch.setenv("BASE_PLATFORM_ENVIRONMENT", configured)
    assert known_environment(None) == configured
    assert known_environment("dev" if configured != "dev" else "prod") != configured  # asked beats configured


@pytest.mark.parametrize("configured", ["production", " dev", "Prod", "qa"])
def test_a_deployment_environment_that_is_none_fails_the_app_and_the_deploy_dags_at_load(
    monkeypatch: pytest.MonkeyPatch, configured: str
) -> None:
    """A typo must not show dev's platform as prod's: the plugin's app and the DAG files that take
    an environment refuse to load, naming the variable."""
    from base_platform.catalog.loader import CatalogError
    from base_platform.ui.app import create_app

    monkeypatch.setenv("BASE_PLATFORM_ENVIRONMENT", configured)
    with pytest.raises(CatalogError, match=r"\$BASE_PLATFORM_ENVIRONMENT: value: .* is not one of dev"):
        create_app()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "platform_deploy.py"))
    assert "$BASE_PLATFORM_ENVIRONMENT" in str(bag.import_errors), bag.import_errors


@pytest.mark.parametrize("asked", ["qa", "", "DEV", "dev ", "prod\n", "../prod", "dev,prod"])
def test_an_unknown_environment_is_a_400(asked: str) -> None:
    with pytest.raises(HTTPException) as refused:
        known_environment(asked)
    assert refused.value.status_code == 400

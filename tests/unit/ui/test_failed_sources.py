"""A source behind the page that fails its first read (Iceberg's catalog unreachable as the
api-server starts) is a 503 with ``Retry-After`` on every route that needs it, never a 500; and a
stored float that is not finite reads as null, not as a 500 from JSON without NaN."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from base_platform.pipelines.data_distribution import serving
from base_platform.ui import state
from tests.unit.ui.conftest import Callers


@pytest.mark.slow
def test_a_catalog_that_cannot_be_read_is_a_503_with_retry_after(
    callers: Callers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "CACHE", state.TTLCache(state.CACHE_SECONDS))
    monkeypatch.delenv("AIRFLOW_CONN_ICEBERG_DEFAULT", raising=False)  # no catalog connection at all
    for path in ("/api/pipelines", "/api/pipelines/overview", "/metrics"):
        answer = callers.get("admin", path)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert answer.headers["Retry-After"].isdigit()


def test_a_stored_nan_or_infinity_reads_as_null() -> None:
    rows = pa.table({"mean": [1.5, math.nan, math.inf, -math.inf, None]})
    assert [row["mean"] for row in serving.to_json_rows(rows)] == [1.5, None, None, None, None]

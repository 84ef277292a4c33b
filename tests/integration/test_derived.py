"""pipeline_merchant_daily under dag.test(): derive, then the same tasks as any pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_storage import tables
from tests.conftest import ROOT
from tests.integration.test_breaker import incoming, run_dag  # noqa: F401 (incoming: the fixture)
from tests.unit.pipelines.test_derived import duckdb_merchant_daily, stored
from tests.unit.pipelines.test_engine import generate_run

pytestmark = pytest.mark.integration


def pipeline_run(dag_id: str) -> tuple[Any, dict[str, str]]:
    from airflow.dag_processing.dagbag import DagBag

    return run_dag(DagBag(dag_folder=str(ROOT / "dags" / "base_pipelines.py")).dags[dag_id])


def test_merchant_daily_derives_from_the_transactions_snapshot_and_matches_duckdb(
    incoming: Path,  # noqa: F811
) -> None:
    from tests.integration.test_data_control import events_of

    generate_run(2000, incoming, 1)
    committed, states = pipeline_run("pipeline_transactions")
    assert committed.state == "success", states
    (event,) = events_of(committed.run_id)

    derived, states = pipeline_run("pipeline_merchant_daily")
    assert derived.state == "success", states
    assert [states[t] for t in ("derive", "discover", "commit", "audit", "settle")] == ["success"] * 5
    snapshot = int(event["snapshot_id"])
    assert stored("merchant_daily") == duckdb_merchant_daily(snapshot)
    (record,) = tables.history(tables.load("merchant_daily"))
    assert record.lineage == {"transactions": str(snapshot)} and record.full_refresh is True
    assert record.dag_run == f"pipeline_merchant_daily/{derived.run_id}"

    again, states = pipeline_run("pipeline_merchant_daily")  # the same snapshot: nothing new
    assert again.state == "success" and states["commit"] == "skipped", states
    assert len(tables.history(tables.load("merchant_daily"))) == 1

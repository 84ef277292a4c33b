"""What the DAGs share: their fixed settings (the one place they live), the poll interval, and
trigger-form params. Airflow checks params when a run is triggered, so a bad value is a 400 at
trigger time, not a failed run later."""

from __future__ import annotations

import inspect
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from base_platform.catalog.loader import ENVIRONMENTS, default_environment
from base_platform.catalog.models import Catalog, Wave

POLL_SECONDS = float(os.environ.get("BASE_PLATFORM_POLL_SECONDS", "10"))
"""How often waits on Argo CD poll (sensors and in-task waits)."""

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
"""Every DAG's start date: none catches up, so it only has to lie before the first run."""


def fixed_settings() -> dict[str, Any]:
    """What every DAG sets alike: the start date, and no catchup (a missed interval is not run late)."""
    return {"start_date": START_DATE, "catchup": False}


def environment_param() -> Param:
    return Param(
        default_environment(), type="string", enum=list(ENVIRONMENTS), description="Target environment"
    )


def waves_param(description: str, default: list[str] | None = None, min_items: int = 0) -> Param:
    return Param(
        [w.value for w in Wave] if default is None else default,
        type="array",
        items={"type": "string", "enum": [w.value for w in Wave]},
        uniqueItems=True,
        minItems=min_items,
        description=description,
    )


def components_param(catalog: Catalog, description: str) -> Param:
    return Param(
        [],
        type="array",
        items={"type": "string", "enum": sorted(c.name for c in catalog.components)},
        uniqueItems=True,
        description=description,
    )


def platform_dag(
    dag_id: str, *, doc_md: str, tags: list[str], schedule: str | None = None, **kwargs: Any
) -> DAG:
    """A DAG with the platform's fixed settings: no catchup, one start date, tags, docs."""
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        **fixed_settings(),
        doc_md=doc_md,
        tags=["platform", *tags],
        **kwargs,
    )


def dataset_dag(
    dag_id: str,
    *,
    doc_md: str,
    tags: list[str],
    params: dict[str, Param],
    schedule: Any = None,
    **kwargs: Any,
) -> DAG:
    """A DAG over the datasets (``pipeline_*``, ``publish_*``, ``features_*``, ``dataset_*``,
    ``pipeline_control``): one run at a time, as each writes its table; every task retried twice,
    20 s apart, as each step finds its table where a first attempt left it."""
    dag = DAG(
        dag_id=dag_id,
        schedule=schedule,
        **fixed_settings(),
        max_active_runs=1,
        params=params,
        doc_md=doc_md,
        tags=tags,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=20)},
        **kwargs,
    )
    # DAG() records the file that called it, this one: keep the builder's, as before this helper.
    # A DagBag sets the DAG file's anyway; this is for DAGs built elsewhere (tests, dag.test()).
    caller = inspect.currentframe()
    dag.fileloc = caller.f_back.f_code.co_filename if caller and caller.f_back else dag.fileloc
    return dag

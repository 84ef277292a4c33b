"""platform_validate: every check runs and says what it saw; the verdict is healthy, degraded or failed.

Params: `scope` (all, core, shared, orchestration, apps, base, security), `environment`, and
an optional `revision` the apps must be at. The report is written as JSON and Markdown; its
path is in the `report` task's XCom and the Markdown in XCom key `report_md`.
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.checks.dag import build_platform_validate_dag

dag: DAG = build_platform_validate_dag(default_catalog(), doc_md=__doc__)

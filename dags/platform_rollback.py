"""platform_rollback: roll apps back to a history entry of Argo CD, wait, and report.

Params: `environment`, `components` or a `wave`, and `to` (a history id, or `previous`).
Automated sync is turned off first where it is on (Argo CD refuses a rollback otherwise), and
the report says so.
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.lifecycle.rollback import build_platform_rollback_dag

dag: DAG = build_platform_rollback_dag(default_catalog(), doc_md=__doc__)

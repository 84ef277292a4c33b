"""platform_destroy: tear down apps in reverse dependency order, with cascade, until each is gone.

Params: `environment`, `waves` or `components`, `confirm` (must equal the environment's name),
`allow_prod` (prod is refused without it) and `stuck_after_seconds`. An app whose
`deletionTimestamp` is older than that is reported stuck on its finalizers, with the
resources still present.
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.lifecycle.destroy import build_platform_destroy_dag

dag: DAG = build_platform_destroy_dag(default_catalog(), doc_md=__doc__)

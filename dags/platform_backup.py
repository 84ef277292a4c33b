"""platform_backup: nightly, the metadata database (run history, connections, variables, roles)
and the Iceberg catalog, dumped with pg_dump to the `platform_backup` connection's location,
keeping the newest `keep`. Restore with `platformctl restore` (docs/reliability.md).
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.lifecycle.backup_dag import build_platform_backup_dag

dag: DAG = build_platform_backup_dag(doc_md=__doc__)

"""Deploy the BASE platform through Argo CD, wave by wave, from `config/platform.yaml`.

Each component is an Argo CD Application: **render → upsert → sync → wait → verify**. The
wait is a deferrable sensor that passes only when the sync this run requested has finished,
been reconciled at the asked revision, and the app is Synced and Healthy. A component starts
as soon as what it depends on is verified; a failure stops only what depends on it.

Params: `environment`, `waves`, `components`, `target_revision` (empty: the overlay's),
`dry_run`, `prune`, `rollback_on_failure`. Dependencies outside the selection are checked,
not redeployed. In prod a human approves before the first sync. The `summary` task reports
per component and per wave (XCom key `report`).
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.deploy.dag import build_platform_deploy_dag

dag: DAG = build_platform_deploy_dag(default_catalog(), doc_md=__doc__)

"""Deploy the BASE platform through Argo CD, wave by wave, from `config/platform.yaml`.

Each component is an Argo CD Application and one deferrable task: **render → upsert → sync →
wait → verify**, told step by step in its log. The wait passes only when the sync this task
started has finished, been reconciled at the asked revision, and the app is Synced and
Healthy; at its timeout it terminates the operation. Within a wave a component starts as soon
as what it depends on is verified; each wave ends with a gate, and a failed gate stops every
later wave.

Params: `environment`, `waves`, `components`, `target_revision` (empty: the overlay's),
`dry_run`, `prune`, `rollback_on_failure`. Dependencies outside the selection are checked,
not redeployed. In prod one of the overlay's approvers, never the user who triggered the run,
approves before the first sync. The `summary` task reports per component and per wave, and
names the gate that stopped the rollout (XCom key `report`).
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.deploy.dag import build_platform_deploy_dag

dag: DAG = build_platform_deploy_dag(default_catalog(), doc_md=__doc__)

"""platform_drift: nightly at 02:00 UTC, the catalog's desired state against Argo CD's live state.

Finds missing apps, orphans (apps the catalog does not know), OutOfSync apps with the fields
that differ per resource, revision and spec drift, and unhealthy apps. Heals only as the
overlay's `drift.heal` policy allows (prod: `none`), writes a JSON and Markdown report, and
notifies the overlay's webhook when something drifted.
"""

from __future__ import annotations

from airflow.sdk import DAG

from base_platform.catalog.loader import default_catalog
from base_platform.drift.dag import build_platform_drift_dag

dag: DAG = build_platform_drift_dag(default_catalog(), doc_md=__doc__)

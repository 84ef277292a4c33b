"""Event coordination: the Assets a pipeline reads and updates, for downstream schedules and lineage.

The URIs are stable names (``x-base-dataset://<name>``), not storage paths: a path can differ by
environment or be overridden per run, and an Asset's identity must not. The ``x-`` scheme is
Airflow's one for custom URIs: no provider normaliser is loaded for it at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from base_platform.pipelines.spec import PipelineSpec


def dataset_asset(spec: PipelineSpec) -> Asset:
    """``base.<name>``: what downstream DAGs put in their ``schedule``."""
    return Asset(name=f"base.{spec.name}", uri=f"x-base-dataset://{spec.name}", group="base-datasets")


# What data_control changes (a rollback, an erasure) reaches a dataset's Asset through this alias,
# so publish_<name> and any DAG scheduled on ``base.<name>`` follow it as they follow a commit.
DATASET_CHANGES = AssetAlias(name="base-dataset-changes", group="base-datasets")


def snapshot_extra(snapshot_id: int, **facts: str) -> dict[str, str]:
    """A dataset event's extra: the snapshot it is about (as text: JSON readers lose big ints)."""
    return {"snapshot_id": str(snapshot_id), **facts}


def announce_change(context: Any, spec: PipelineSpec, snapshot_id: int, reason: str) -> None:
    """An event on the dataset's Asset, from a task whose outlets hold :data:`DATASET_CHANGES`."""
    extra = snapshot_extra(snapshot_id, reason=reason)
    context["outlet_events"][DATASET_CHANGES].add(dataset_asset(spec), extra=extra)


def source_asset(spec: PipelineSpec) -> Asset:
    return Asset(
        name=f"base.{spec.name}.source", uri=f"x-base-dataset://{spec.name}/source", group="base-sources"
    )

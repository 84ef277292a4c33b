"""Event coordination: the Assets a pipeline reads and updates, for downstream schedules and lineage.

The URIs are stable names (``x-base-dataset://<name>``), not storage paths: a path can differ by
environment or be overridden per run, and an Asset's identity must not. The ``x-`` scheme is
Airflow's one for custom URIs: no provider normaliser is loaded for it at parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias, AssetAny

from base_platform.pipelines.spec import PipelineSpec

ASSET_PREFIX = "base."  # a dataset's Asset is base.<name>


def dataset_asset(spec: PipelineSpec) -> Asset:
    """``base.<name>``: what downstream DAGs put in their ``schedule``."""
    return asset_of(spec.name)


def asset_of(name: str) -> Asset:
    return Asset(name=f"{ASSET_PREFIX}{name}", uri=f"x-base-dataset://{name}", group="base-datasets")


def inputs_changed(spec: PipelineSpec) -> AssetAny:
    """A derived pipeline's schedule: an event on any of its inputs (a commit, rollback or erasure)."""
    return AssetAny(*(asset_of(name) for name in spec.inputs))


def triggered_snapshots(context: Any) -> dict[str, int]:
    """Per dataset, the snapshot that the newest of the run's triggering events names."""
    events = [
        event
        for found in (context.get("triggering_asset_events") or {}).values()
        for event in found
        if event.asset.name.startswith(ASSET_PREFIX) and (event.extra or {}).get("snapshot_id")
    ]
    return {
        event.asset.name.removeprefix(ASSET_PREFIX): int(event.extra["snapshot_id"])
        for event in sorted(events, key=lambda e: e.timestamp)
    }


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
    """The source's Asset; a stream's carries the watcher that starts the pipeline's runs."""
    from base_platform.pipelines.data_streaming.stream_tasks import is_stream, watched_source

    asset = Asset(
        name=f"base.{spec.name}.source", uri=f"x-base-dataset://{spec.name}/source", group="base-sources"
    )
    return watched_source(spec, asset) if is_stream(spec) else asset

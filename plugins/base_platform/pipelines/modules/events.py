"""Event coordination: the Airflow Asset a pipeline updates, so downstream DAGs can schedule on it."""

from __future__ import annotations

from airflow.sdk import Asset

from base_platform.pipelines.spec import PipelineSpec, resolve


def asset_uri(uri: str) -> str:
    resolved = resolve(uri)
    return resolved if "://" in resolved else f"file://{resolved}"


def dataset_asset(spec: PipelineSpec) -> Asset:
    """``base.<name>`` at the storage URI: what downstream DAGs put in their ``schedule``."""
    return Asset(name=f"base.{spec.name}", uri=asset_uri(spec.storage.uri), group="base-datasets")


def source_asset(spec: PipelineSpec) -> Asset:
    return Asset(name=f"base.{spec.name}.source", uri=asset_uri(spec.source.uri), group="base-sources")

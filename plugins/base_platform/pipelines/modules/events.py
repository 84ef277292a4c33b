"""Event coordination: the Assets a pipeline reads and updates, for downstream schedules and lineage.

The URIs are stable names (``x-base-dataset://<name>``), not storage paths: a path can differ by
environment or be overridden per run, and an Asset's identity must not. The ``x-`` scheme is
Airflow's one for custom URIs: no provider normaliser is loaded for it at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset

from base_platform.pipelines.spec import PipelineSpec


def dataset_asset(spec: PipelineSpec) -> Asset:
    """``base.<name>``: what downstream DAGs put in their ``schedule``."""
    return Asset(name=f"base.{spec.name}", uri=f"x-base-dataset://{spec.name}", group="base-datasets")


def source_asset(spec: PipelineSpec) -> Asset:
    return Asset(
        name=f"base.{spec.name}.source", uri=f"x-base-dataset://{spec.name}/source", group="base-sources"
    )

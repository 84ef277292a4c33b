"""``features_<name>``: materialise a feature view after every change of its source or references.

Scheduled on the datasets' Assets (a commit, a rollback or an erasure of ``transactions`` starts
``features_account_spend``). ``materialize`` brings the offline table to the source's current
snapshot, recomputing only from the earliest event time the new rows can change;
``publish_online`` replaces the online store's values with those at the new watermark. Both
are idempotent: a retry or a repeated run finds the state recorded and does the same again.
The run's Asset ``base.features.<name>`` tells training jobs that new features are there.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Asset, AssetAny, Param, task
from airflow.sdk.exceptions import AirflowFailException

from base_platform.dag_defaults import dataset_dag
from base_platform.pipelines.event_coordination.dataset_assets import asset_of
from base_platform.pipelines.feature_engineering.views import FeatureView

log = logging.getLogger(__name__)


def features_asset(view: FeatureView) -> Asset:
    return Asset(
        name=f"base.features.{view.name}", uri=f"x-base-features://{view.name}", group="base-features"
    )


def build_features_dag(view: FeatureView) -> DAG:
    params = {
        "full_refresh": Param(
            False,
            type="boolean",
            description="Recompute every row of the offline table, not only what changed",
        )
    }
    with dataset_dag(
        f"features_{view.name}",
        schedule=AssetAny(*(asset_of(name) for name in (view.source.dataset, *view.references))),
        params=params,
        doc_md=f"{view.description}\n\n{__doc__}",
        tags=["feature_engineering", view.source.dataset],
    ) as dag:

        @task(outlets=[features_asset(view)])
        def materialize(**context: Any) -> dict[str, Any]:
            from base_platform.pipelines.feature_engineering import offline

            try:
                done = offline.materialise(view, full_refresh=bool(context["params"]["full_refresh"]))
            except offline.FeatureError as exc:
                raise AirflowFailException(str(exc)) from exc
            log.info("%s", done)
            context["outlet_events"][features_asset(view)].extra = {
                "source_snapshot": str(done.state.source_snapshot),
                "watermark": done.state.watermark,
            }
            return done.to_json()

        @task
        def publish_online() -> dict[str, Any]:
            from base_platform.pipelines.feature_engineering import offline

            published = offline.publish_online(view)
            log.info("%s", published)
            return published

        materialize() >> publish_online()
    return dag

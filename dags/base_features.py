"""One Airflow DAG per feature view in config/features/: ``features_<name>``, scheduled on its
source dataset's Asset (and its reference datasets'). A bad definition fails this file's import,
naming file and key."""

from __future__ import annotations

from base_platform.pipelines.feature_engineering.dag import build_features_dag
from base_platform.pipelines.feature_engineering.views import load_feature_views

for _view in load_feature_views():
    globals()[f"features_{_view.name}"] = build_features_dag(_view)

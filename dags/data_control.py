"""The data_control module's Airflow DAGs: ``dataset_rollback`` (a dataset's table back to a snapshot)."""

from __future__ import annotations

from base_platform.pipelines.control_dag import build_rollback_dag

dataset_rollback = build_rollback_dag()

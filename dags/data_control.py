"""The data_control module's Airflow DAGs: rollback, nightly maintenance, erasure, samples and splits."""

from __future__ import annotations

from base_platform.pipelines.data_control.dag import (
    build_erase_dag,
    build_maintenance_dag,
    build_rollback_dag,
    build_sample_dag,
    build_split_dag,
)

dataset_rollback = build_rollback_dag()
dataset_maintenance = build_maintenance_dag()
dataset_erase = build_erase_dag()
dataset_sample = build_sample_dag()
dataset_split = build_split_dag()

"""pipeline_management's Airflow DAG ``pipeline_control``: publish or discard the audit an open
circuit breaker holds, then close the breaker and resume the pipeline's schedule."""

from __future__ import annotations

from base_platform.pipelines.pipeline_management.breaker_dag import build_pipeline_control_dag

pipeline_control = build_pipeline_control_dag()

"""One Airflow DAG per pipeline spec in config/pipelines/: ``pipeline_<name>``, and
``publish_<name>`` for a spec with ``distribution:`` targets.

Each pipeline runs discover → process_shard (one per input file) → commit → catalog and
monitor, and updates the Asset ``base.<name>``, on which ``publish_<name>`` is scheduled. A bad
spec fails this file's import, naming file and key.
"""

from __future__ import annotations

from base_platform.pipelines.data_distribution.dag import build_publish_dag
from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag
from base_platform.pipelines.spec import load_pipelines

for _pipeline in load_pipelines():
    globals()[f"pipeline_{_pipeline.spec.name}"] = build_pipeline_dag(_pipeline)
    if _pipeline.spec.distribution:
        globals()[f"publish_{_pipeline.spec.name}"] = build_publish_dag(_pipeline)

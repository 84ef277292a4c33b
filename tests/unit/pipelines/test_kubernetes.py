"""The kubernetes target: the pod runs the same engine call, in base-<module>, with no secret inline."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag
from base_platform.pipelines.pipeline_management.pod import pod_settings, shard_arguments
from base_platform.pipelines.spec import Pipeline, pipeline_named

SHARD = {"index": 0, "source": "s3://raw/transactions/a.csv", "checksum": "ab" * 32, "size": 10}


@pytest.fixture
def pipeline() -> Pipeline:
    local = pipeline_named("transactions")
    return local.model_copy(update={"spec": local.spec.model_copy(update={"execution": "kubernetes"})})


def rendered_pod(pipeline: Pipeline) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    process_shard = KubernetesPodOperator(
        task_id="process_shard",
        arguments=shard_arguments(pipeline, SHARD, "manual__1", "s3://curated/transactions"),
        **pod_settings(pipeline),
    )
    return process_shard.build_pod_request_obj(dry_run=True)  # no cluster here; the spec is what we check


@pytest.mark.slow
def test_the_pod_runs_the_engine_with_the_shards_arguments(pipeline: Pipeline) -> None:
    pod = rendered_pod(pipeline)
    container = pod.spec.containers[0]
    assert pod.metadata.namespace == "base-data-ingestion"  # the catalog's, where Argo CD deploys it
    assert container.image == "base-platform-airflow:latest"
    assert container.command == ["python"]
    args = container.args
    assert args[:2] == ["-m", "base_platform.pipelines.pipeline_management.shard_command"]
    assert dict(zip(args[2::2], args[3::2], strict=True)) == {
        "--pipeline": "transactions",
        "--shard": json.dumps(SHARD, sort_keys=True),
        "--run-key": "manual__1",
        "--target-uri": "s3://curated/transactions",
    }
    assert container.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert pod.spec.service_account_name == "base-pipelines"
    assert container.security_context.run_as_non_root is True


def test_no_secret_is_inline_only_a_secret_reference(pipeline: Pipeline) -> None:
    pod = rendered_pod(pipeline)
    container = pod.spec.containers[0]
    assert [source.secret_ref.name for source in container.env_from] == ["base-pipelines-vault"]
    inline = json.dumps([{"name": e.name, "value": e.value} for e in container.env or []])
    assert not re.search(r"(?i)password|token|secret_id|hmac_key|vault://", inline), inline


def test_the_dag_maps_pods_over_the_discovered_shards(pipeline: Pipeline) -> None:
    dag = build_pipeline_dag(pipeline)
    task = dag.get_task("process_shard")
    assert type(task).__name__ == "MappedOperator" and task.operator_class.__name__ == "KubernetesPodOperator"
    assert getattr(task, "partial_kwargs")["namespace"] == "base-data-ingestion"  # noqa: B009 - a MappedOperator
    assert dag.get_task("pod_arguments").upstream_task_ids == {"discover"}
    assert dag.get_task("commit").upstream_task_ids == {"process_shard"}

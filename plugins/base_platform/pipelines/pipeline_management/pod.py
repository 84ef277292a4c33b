"""The ``kubernetes`` execution target: process_shard as a pod in the module's namespace.

The pod runs the same engine call with the same arguments as the local task
(``python -m base_platform.pipelines.pipeline_management.shard_command``), from the platform's own
image. Credentials never appear in the pod spec: Vault's address and AppRole come from a Kubernetes Secret
through ``envFrom``, and the pod runs as a dedicated service account.
"""

from __future__ import annotations

import json
import os
from typing import Any

from base_platform.catalog.loader import default_catalog
from base_platform.pipelines.spec import Pipeline

IMAGE_VARIABLE = "BASE_PIPELINES_IMAGE"
DEFAULT_IMAGE = "base-platform-airflow:latest"
MODULE = "data-ingestion"  # process_shard is the ingestion module's stage chain: its catalog entry
SERVICE_ACCOUNT = "base-pipelines"
VAULT_ENV_FROM = "base-pipelines-vault"  # a Kubernetes Secret holding AIRFLOW_CONN_VAULT_DEFAULT
RESOURCES = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def shard_arguments(pipeline: Pipeline, shard: dict[str, Any], run_key: str, target_uri: str) -> list[str]:
    """The command line of one shard: exactly what the local task passes to the engine."""
    return [
        "-m",
        "base_platform.pipelines.pipeline_management.shard_command",
        "--pipeline",
        pipeline.spec.name,
        "--shard",
        json.dumps(shard, sort_keys=True),
        "--run-key",
        run_key,
        "--target-uri",
        target_uri,
    ]


def pod_settings(pipeline: Pipeline) -> dict[str, Any]:
    """The fixed part of the KubernetesPodOperator (everything but each shard's arguments)."""
    from kubernetes.client import models as k8s

    return {
        "namespace": default_catalog().component(MODULE).namespace,  # where Argo CD deploys the module
        "image": os.environ.get(IMAGE_VARIABLE, DEFAULT_IMAGE),
        "cmds": ["python"],
        "name": f"pipeline-{pipeline.spec.name.replace('_', '-')}-shard",
        "labels": {
            "app.kubernetes.io/part-of": "base-platform",
            "base.platform/pipeline": pipeline.spec.name,
        },
        "service_account_name": SERVICE_ACCOUNT,
        "env_vars": {"PYTHONPATH": "/opt/airflow/plugins:/opt/airflow"},
        "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=VAULT_ENV_FROM))],
        "container_resources": k8s.V1ResourceRequirements(**RESOURCES),
        "container_security_context": k8s.V1SecurityContext(
            run_as_non_root=True, allow_privilege_escalation=False, read_only_root_filesystem=False
        ),
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
    }

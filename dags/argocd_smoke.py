"""Smoke check of the Argo CD integration: upsert one Application, sync it, and wait, in one task.

The wait defers to the triggerer and passes only when the sync this task started has finished,
been reconciled, compared at the asked revision, and the app is Synced and Healthy. Against the
simulator's `degraded.yaml` scenario it fails with Argo CD's own resource messages.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag

from base_platform.argocd.operators import ArgoCDSyncApplicationOperator
from base_platform.dag_defaults import fixed_settings

APP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$"


@dag(
    dag_id="argocd_smoke",
    schedule=None,
    **fixed_settings(),
    doc_md=__doc__,
    tags=["argocd", "smoke"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=10)},
    render_template_as_native_obj=True,
    params={
        "app_name": Param(
            "smoke-app", type="string", pattern=APP_NAME_PATTERN, description="Application name"
        ),
        "repo_url": Param("https://git.example.com/platform/deploy.git", type="string", format="uri"),
        "path": Param("smoke", type="string", minLength=1),
        "revision": Param("main", type="string", minLength=1, description="Branch, tag or commit SHA"),
        "dry_run": Param(False, type="boolean"),
    },
)
def argocd_smoke() -> None:
    ArgoCDSyncApplicationOperator(
        task_id="sync",
        app_name="{{ params.app_name }}",
        application={
            "metadata": {"name": "{{ params.app_name }}", "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {
                    "repoURL": "{{ params.repo_url }}",
                    "path": "{{ params.path }}",
                    "targetRevision": "{{ params.revision }}",
                },
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "smoke"},
                "syncPolicy": {"syncOptions": ["CreateNamespace=true"]},
            },
        },
        revision="{{ params.revision }}",
        is_dry_run="{{ params.dry_run }}",
        wait_for_completion=True,
        wait_timeout=600,
        poll_interval=2,
        degraded_grace_seconds=30,
    )


argocd_smoke()

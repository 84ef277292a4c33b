"""Build ``platform_backup``: nightly, dump the orchestrator's state to the location of the
``platform_backup`` connection, then keep only the newest backups.

The connection is an amazon one (``aws``): its credentials and endpoint reach the bucket, and its
extra names ``location`` (``s3://bucket/prefix``, or a folder) and ``keep`` (default 14).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from base_platform.dag_defaults import platform_dag

log = logging.getLogger(__name__)
DAG_ID = "platform_backup"
CONN_ID = "platform_backup"
DEFAULT_KEEP = 14
SCHEDULE = "0 2 * * *"  # nightly: the metadata database's RPO (docs/reliability.md)


def backup_target() -> tuple[str, int]:
    """The location and the number of backups to keep, from the connection's extra."""
    from airflow.sdk import BaseHook

    extra = BaseHook.get_connection(CONN_ID).extra_dejson
    location, keep = extra.get("location"), extra.get("keep", DEFAULT_KEEP)
    if not isinstance(location, str) or not location:
        raise ValueError(f"connection {CONN_ID}: extra.location must name s3://bucket/prefix or a folder")
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"connection {CONN_ID}: extra.keep must be a whole number of backups, at least 1")
    return location, keep


def build_platform_backup_dag(doc_md: str | None = None) -> DAG:
    with platform_dag(
        DAG_ID,
        doc_md=doc_md or __doc__ or "",
        tags=["backup"],
        schedule=SCHEDULE,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    ) as dag:

        @task
        def backup() -> dict[str, Any]:
            from base_platform.lifecycle import backup as state

            location, _ = backup_target()
            store = state.Store.of(location, CONN_ID)
            manifest = state.backup(state.orchestrator_databases(), store, state.fernet_key())
            log.info("Backup %s to %s: %s", manifest["id"], location, manifest["databases"])
            return manifest

        @task
        def prune(manifest: Any) -> list[str]:
            from base_platform.lifecycle import backup as state

            location, keep = backup_target()
            pruned = state.prune(state.Store.of(location, CONN_ID), keep)
            log.info("Kept the newest %d backups (the last %s); deleted %s", keep, manifest["id"], pruned)
            return pruned

        prune(backup())
    return dag

"""Where DAGs write their reports: one folder per DAG run, JSON beside Markdown.

The root is ``BASE_PLATFORM_ARTIFACTS`` (any fsspec URL Airflow's ObjectStoragePath accepts,
such as ``s3://bucket/reports`` for a Celery fleet), by default ``$AIRFLOW_HOME/artifacts``.
Each file is written beside its final name and renamed into place, so a reader never sees
half a report and a re-run replaces the previous one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def artifacts_root() -> ObjectStoragePath:
    configured = os.environ.get("BASE_PLATFORM_ARTIFACTS")
    if configured:
        return ObjectStoragePath(
            configured if "://" in configured else f"file://{Path(configured).resolve()}"
        )
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return ObjectStoragePath(f"file://{home.resolve() / 'artifacts'}")


def safe_name(run_id: str) -> str:
    """A run id usable as a file or folder name (``manual__2026-…+00:00`` has ``:`` and ``+``)."""
    return UNSAFE.sub("_", run_id)


def run_folder(dag_id: str, run_id: str) -> ObjectStoragePath:
    return artifacts_root() / dag_id / safe_name(run_id)


def write_atomically(path: ObjectStoragePath, text: str) -> None:
    """:meth:`Location.write_atomically <base_platform.files.Location.write_atomically>` on ``path``."""
    from base_platform.files import Location  # pyarrow loads when a task writes, not at DAG parse

    Location.of_fsspec(path.fs, path.path).write_atomically(text.encode())


def write_report(dag_id: str, run_id: str, name: str, report: Any, markdown: str) -> dict[str, str]:
    """Write ``<name>.json`` and ``<name>.md``; return their URLs."""
    folder = run_folder(dag_id, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / f"{name}.json", "markdown": folder / f"{name}.md"}
    write_atomically(paths["json"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_atomically(paths["markdown"], markdown)
    return {kind: str(path) for kind, path in paths.items()}

"""Every DAG file imports cleanly, fast, without network or heavy imports, and follows policy."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = ("pyarrow", "datafusion", "duckdb", "hvac", "kubernetes", "boto3", "polars", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_file_imports_without_errors(dagbag, path: Path) -> None:
    assert str(path) not in dagbag.import_errors, dagbag.import_errors.get(str(path))


def test_there_are_dags(dagbag) -> None:
    assert dagbag.dags, "no DAGs were found"


@pytest.mark.slow
def test_every_dag_serializes(dagbag) -> None:
    """The scheduler stores DAGs serialized; a DAG that cannot be serialized never runs."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dagbag.dags.items():
        assert DagSerialization.to_dict(dag), dag_id


def test_every_dag_has_tags_retries_and_docs(dagbag) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.catchup is False, f"{dag_id} must set catchup=False"
        for task in dag.tasks:
            if isinstance(task, HITLOperator):
                continue  # a retry would ask the human again
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_every_dag_takes_the_shared_start_date(dagbag) -> None:
    """The fixed settings live in ``dag_defaults`` alone: a DAG that sets its own drifts apart."""
    from base_platform.dag_defaults import START_DATE

    own = {dag_id: dag.start_date for dag_id, dag in dagbag.dags.items() if dag.start_date != START_DATE}
    assert own == {}


@pytest.fixture(scope="module")
def parse_probe() -> dict[str, str]:
    """Import every DAG file, one after another, in one fresh interpreter with sockets disabled;
    after each, the heavy modules loaded so far. A file that loads one is the first to show it."""
    probe = f"""
import json, socket, sys, runpy
def refuse(*a, **k):
    raise RuntimeError("network access at DAG parse time")
socket.socket.connect = refuse
socket.create_connection = refuse
sys.path[:0] = [{str(ROOT / "plugins")!r}, {str(ROOT)!r}]
found = {{}}
for path in {[str(p) for p in DAG_FILES]!r}:
    runpy.run_path(path)
    found[path] = ",".join(m for m in {HEAVY!r} if m in sys.modules)
print("HEAVY:" + json.dumps(found))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    found: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("HEAVY:"))
    return found


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
@pytest.mark.slow
def test_no_heavy_imports_or_network_at_parse_time(parse_probe: dict[str, str], path: Path) -> None:
    assert parse_probe[str(path)] == "", f"{path.name} loads {parse_probe[str(path)]} at parse time"


def test_platform_deploy_summary_waits_for_every_other_task(dagbag) -> None:
    """The summary reads final task states: anything not upstream of it may still be running."""
    dag = dagbag.dags["platform_deploy"]
    summary = dag.task_dict["summary"]
    upstream = summary.get_flat_relative_ids(upstream=True)
    assert upstream == set(dag.task_dict) - {"summary"}


@pytest.mark.parametrize(
    ("dag_id", "graph_of"), [("platform_deploy", "deploy_graph"), ("platform_destroy", "destroy_graph")]
)
def test_the_built_dag_is_the_plans_graph(dagbag, dag_id: str, graph_of: str) -> None:
    """One builder turns the plan's graph into tasks: same ids, same edges, same trigger rules."""
    from base_platform.catalog.loader import default_catalog
    from base_platform.plan import graph

    plan = getattr(graph, graph_of)(default_catalog())
    dag = dagbag.dags[dag_id]
    built = {t.task_id: (set(t.upstream_task_ids), str(t.trigger_rule.value)) for t in dag.tasks}
    planned = {n.task_id: (set(n.upstream), n.rule.value) for n in plan.nodes}
    assert built == planned


def test_platform_deploy_has_one_task_per_component(dagbag) -> None:
    from base_platform.catalog.loader import default_catalog

    components = len(default_catalog().components)
    assert len(dagbag.dags["platform_deploy"].tasks) == components + 5 + 3  # gates, plan, approve, summary

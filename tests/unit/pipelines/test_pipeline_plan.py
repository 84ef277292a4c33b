"""``pipeline_<name>`` is its plan: for each variant (files, derived, a stream, stream operators,
the kubernetes target) the DAG ``build_pipeline_dag`` makes has exactly the plan's tasks, edges,
trigger rules and mapped tasks, and the plan has the shape the docs describe."""

from __future__ import annotations

import pytest

from base_platform.pipelines.pipeline_management.dag import build_pipeline_dag
from base_platform.pipelines.pipeline_management.pipeline_plan import (
    PipelineNode,
    PipelinePlan,
    PipelineStep,
    pipeline_plan,
)
from base_platform.pipelines.spec import Pipeline, pipeline_named

VARIANTS = [
    ("transactions", False),  # files
    ("merchant_daily", False),  # derived: inputs and a transform
    ("card_events", False),  # a redis_stream source
    ("card_authorisations", False),  # stream operators: route and join
    ("card_reversals", False),
    ("account_spend_5m", False),  # stream operators: a window
    ("transactions", True),  # the kubernetes execution target
    ("merchant_daily", True),
    ("card_events", True),
]
FILES = {
    ("discover", "process_shard"),
    ("process_shard", "commit"),
    ("commit", "audit"),
    ("audit", "catalog"),
    ("audit", "monitor"),
    ("catalog", "settle"),
    ("monitor", "settle"),
}
PODS = (FILES - {("discover", "process_shard")}) | {
    ("discover", "pod_arguments"),
    ("pod_arguments", "process_shard"),
}


def variant(name: str, kubernetes: bool) -> Pipeline:
    pipeline = pipeline_named(name)
    if not kubernetes:
        return pipeline
    return pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"execution": "kubernetes"})})


@pytest.mark.parametrize(
    ("name", "kubernetes"), VARIANTS, ids=[f"{n}{'-k8s' if k else ''}" for n, k in VARIANTS]
)
def test_the_built_dag_is_the_plan(name: str, kubernetes: bool) -> None:
    pipeline = variant(name, kubernetes)
    plan = pipeline_plan(pipeline.spec)
    dag = build_pipeline_dag(pipeline)
    built = {t.task_id: (set(t.upstream_task_ids), t.trigger_rule.value, t.is_mapped) for t in dag.tasks}
    planned = {n.task_id: (set(n.upstream), n.rule.value, n.mapped) for n in plan.nodes}
    assert built == planned


@pytest.mark.parametrize(
    ("name", "kubernetes", "edges"),
    [
        ("transactions", False, FILES),
        ("merchant_daily", False, FILES | {("derive", "discover")}),
        ("card_events", False, FILES | {("audit", "acknowledge")}),
        ("card_authorisations", False, FILES | {("derive", "discover")}),
        ("transactions", True, PODS),
        ("merchant_daily", True, PODS | {("derive", "discover")}),
        ("card_events", True, PODS | {("audit", "acknowledge")}),
    ],
)
def test_each_variant_has_its_shape(name: str, kubernetes: bool, edges: set[tuple[str, str]]) -> None:
    plan = pipeline_plan(variant(name, kubernetes).spec)
    assert plan.edges == edges
    unusual = {n.task_id: n.rule.value for n in plan.nodes if n.rule.value != "all_success"}
    assert unusual == {"commit": "none_failed", "settle": "all_done"}
    (mapped,) = [n for n in plan.nodes if n.mapped]
    assert (mapped.task_id, mapped.step) == (
        "process_shard",
        PipelineStep.SHARD_POD if kubernetes else PipelineStep.PROCESS_SHARD,
    )
    assert mapped.reads == ("pod_arguments" if kubernetes else "discover")


def test_a_plan_lists_each_task_after_what_it_waits_for() -> None:
    with pytest.raises(ValueError, match="before its upstream"):
        PipelinePlan(
            (
                PipelineNode("commit", PipelineStep.COMMIT, ("audit",)),
                PipelineNode("audit", PipelineStep.AUDIT),
            )
        )
    with pytest.raises(ValueError, match="not upstream"):
        PipelineNode("commit", PipelineStep.COMMIT, reads="process_shard")

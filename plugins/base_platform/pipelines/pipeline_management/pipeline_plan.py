"""The task graph of ``pipeline_<name>`` as plain data, from the spec alone: no Airflow here, so
tests check the graph without it, and ``pipeline_management.dag`` only builds what this says.

Files: ``discover → process_shard (mapped) → commit → audit → catalog, monitor → settle``. A
derived pipeline (``inputs:``) runs ``derive`` first; a ``redis_stream`` source adds
``acknowledge`` after ``audit``; the ``kubernetes`` execution target maps pods over the
arguments ``pod_arguments`` makes of ``discover``'s shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from base_platform.pipelines.spec import PipelineSpec, RedisStreamSource
from base_platform.plan.graph import Rule


class PipelineStep(StrEnum):
    """What a task does; ``pipeline_management.dag`` knows how to make each."""

    DERIVE = "derive"
    DISCOVER = "discover"
    PROCESS_SHARD = "process_shard"
    POD_ARGUMENTS = "pod_arguments"
    SHARD_POD = "shard_pod"
    COMMIT = "commit"
    AUDIT = "audit"
    ACKNOWLEDGE = "acknowledge"
    CATALOG = "catalog"
    MONITOR = "monitor"
    SETTLE = "settle"


@dataclass(frozen=True)
class PipelineNode:
    """One task. ``reads``: the upstream task whose return value it takes, one task per item of
    it when ``mapped``; an upstream it does not read only orders it."""

    task_id: str
    step: PipelineStep
    upstream: tuple[str, ...] = ()
    reads: str | None = None
    mapped: bool = False
    rule: Rule = Rule.ALL_SUCCESS

    def __post_init__(self) -> None:
        if self.reads is not None and self.reads not in self.upstream:
            raise ValueError(f"{self.task_id} reads {self.reads}, which is not upstream of it")
        if self.mapped and self.reads is None:
            raise ValueError(f"{self.task_id} is mapped over nothing")


@dataclass(frozen=True)
class PipelinePlan:
    nodes: tuple[PipelineNode, ...]
    """Upstream first: a task comes after every task it waits for, so a builder can pass it what
    it reads."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for node in self.nodes:
            if missing := set(node.upstream) - seen:
                raise ValueError(f"{node.task_id} comes before its upstream {sorted(missing)}")
            seen.add(node.task_id)

    def node(self, task_id: str) -> PipelineNode:
        return next(n for n in self.nodes if n.task_id == task_id)

    @property
    def edges(self) -> set[tuple[str, str]]:
        """Every (upstream, downstream) pair of task ids."""
        return {(upstream, n.task_id) for n in self.nodes for upstream in n.upstream}


def _reading(
    task_id: str, step: PipelineStep, source: str, *, mapped: bool = False, rule: Rule = Rule.ALL_SUCCESS
) -> PipelineNode:
    return PipelineNode(task_id, step, (source,), source, mapped, rule)


def pipeline_plan(spec: PipelineSpec) -> PipelinePlan:
    nodes: list[PipelineNode] = []
    if spec.inputs:  # its transform writes the run's one input file, which discover then finds
        nodes.append(PipelineNode("derive", PipelineStep.DERIVE))
    nodes.append(PipelineNode("discover", PipelineStep.DISCOVER, tuple(n.task_id for n in nodes)))
    if spec.execution == "kubernetes":
        nodes.append(_reading("pod_arguments", PipelineStep.POD_ARGUMENTS, "discover"))
        nodes.append(_reading("process_shard", PipelineStep.SHARD_POD, "pod_arguments", mapped=True))
    else:
        nodes.append(_reading("process_shard", PipelineStep.PROCESS_SHARD, "discover", mapped=True))
    # none_failed: with no new input there are no shards (skipped); commit then skips itself.
    nodes.append(_reading("commit", PipelineStep.COMMIT, "process_shard", rule=Rule.NONE_FAILED))
    nodes.append(_reading("audit", PipelineStep.AUDIT, "commit"))
    if isinstance(spec.source, RedisStreamSource):  # acks only what the audit published
        nodes.append(_reading("acknowledge", PipelineStep.ACKNOWLEDGE, "audit"))
    nodes.append(_reading("catalog", PipelineStep.CATALOG, "audit"))
    nodes.append(_reading("monitor", PipelineStep.MONITOR, "audit"))
    # all_done: settle counts the run for the breaker whatever became of the tasks before it.
    nodes.append(PipelineNode("settle", PipelineStep.SETTLE, ("catalog", "monitor"), rule=Rule.ALL_DONE))
    return PipelinePlan(tuple(nodes))

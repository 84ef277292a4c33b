"""Turn a plan's :class:`~base_platform.plan.graph.Graph` into Airflow tasks: one builder for
``platform_deploy`` and ``platform_destroy`` alike, so neither works its edges out again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import TaskGroup

from base_platform.catalog.models import Wave
from base_platform.plan.graph import Graph, Node

TaskFactory = Callable[[Node, dict[str, Any]], Any]
"""Makes the task of one node, passing on the keyword arguments it is given (task id, trigger rule)."""


def build_tasks(graph: Graph, make: TaskFactory) -> dict[str, Any]:
    """Each node's task, inside its wave's TaskGroup, wired to its upstream ids; by task id."""
    groups: dict[Wave, TaskGroup] = {}
    tasks: dict[str, Any] = {}
    for node in graph.nodes:
        common = {"task_id": node.name, "trigger_rule": node.rule.value}
        if node.wave is None:
            tasks[node.task_id] = make(node, common)
            continue
        if node.wave not in groups:
            groups[node.wave] = TaskGroup(
                node.wave.value, tooltip=f"Wave {node.wave.position}: {node.wave.value}"
            )
        with groups[node.wave]:
            tasks[node.task_id] = make(node, common)
    for node in graph.nodes:
        for upstream in node.upstream:
            tasks[upstream] >> tasks[node.task_id]
    return tasks

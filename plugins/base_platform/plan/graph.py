"""The task graphs of ``platform_deploy`` and ``platform_destroy`` as plain data: nodes with
their upstream ids and trigger rules. No Airflow here; ``base_platform.graph_builder`` turns a
graph into tasks, and tests check the graph without running Airflow.

Deploy: ``plan → approve → components → summary``. A component waits for what it depends on
and for the gate of the wave before its own, so a failed gate stops every later wave; within a
wave, independent components run in parallel. Destroy: ``guard →`` each component once all its
dependents are gone, the control plane after everything else ``→ summary``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from base_platform.catalog.models import Catalog, Wave
from base_platform.plan.deploy import topological_order


class Rule(StrEnum):
    """The Airflow trigger rules the graphs use, by their Airflow names."""

    ALL_SUCCESS = "all_success"
    NONE_FAILED = "none_failed"
    ALL_DONE = "all_done"


class Kind(StrEnum):
    PLAN = "plan"
    APPROVE = "approve"
    COMPONENT = "component"
    GATE = "gate"
    SUMMARY = "summary"


@dataclass(frozen=True)
class Node:
    """One task: ``task_id`` is ``group.name`` inside a wave's TaskGroup, else ``name``."""

    name: str
    kind: Kind
    upstream: tuple[str, ...] = ()
    rule: Rule = Rule.ALL_SUCCESS
    wave: Wave | None = None

    @property
    def task_id(self) -> str:
        return f"{self.wave.value}.{self.name}" if self.wave else self.name

    @property
    def component(self) -> str:
        if self.kind is not Kind.COMPONENT:
            raise ValueError(f"{self.task_id} is a {self.kind.value} step, not a component")
        return self.name


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]

    def node(self, task_id: str) -> Node:
        return next(n for n in self.nodes if n.task_id == task_id)

    def of_kind(self, kind: Kind) -> list[Node]:
        return [n for n in self.nodes if n.kind is kind]


def component_id(catalog: Catalog, name: str) -> str:
    return f"{catalog.component(name).wave.value}.{name}"


def deploy_graph(catalog: Catalog) -> Graph:
    """Every component of the catalog, so the grid stays stable; the plan task picks at run time."""
    nodes = [Node("plan", Kind.PLAN), Node("approve", Kind.APPROVE, ("plan",))]
    previous_gate: str | None = None
    for wave in Wave:
        members = [c for c in topological_order(catalog.components) if c.wave is wave]
        for component in members:
            upstream = [component_id(catalog, d) for d in component.depends_on]
            if previous_gate and not any(catalog.component(d).wave is wave for d in component.depends_on):
                upstream.append(previous_gate)  # the first of this wave's chains waits for the gate
            # none_failed: a dependency not selected in this run (skipped) does not block.
            nodes.append(
                Node(component.name, Kind.COMPONENT, _sorted(upstream or ["approve"]), Rule.NONE_FAILED, wave)
            )
        gate = Node(
            "gate", Kind.GATE, _sorted(component_id(catalog, c.name) for c in members), Rule.NONE_FAILED, wave
        )
        nodes.append(gate)
        previous_gate = gate.task_id
    # The summary reads every task's final state, so it waits for all of them.
    nodes.append(Node("summary", Kind.SUMMARY, _sorted(n.task_id for n in nodes if n.wave), Rule.ALL_DONE))
    return Graph(tuple(nodes))


def destroy_graph(catalog: Catalog) -> Graph:
    """A component is deleted once its dependents are gone; the control plane goes last."""
    control_plane = catalog.control_plane
    ordinary = [component_id(catalog, c.name) for c in catalog.components if c.name not in control_plane]
    nodes = [Node("guard", Kind.PLAN)]
    for component in reversed(topological_order(catalog.components)):
        upstream = {
            component_id(catalog, c.name) for c in catalog.components if component.name in c.depends_on
        }
        if component.name in control_plane:
            upstream |= set(ordinary)
        nodes.append(
            Node(
                component.name,
                Kind.COMPONENT,
                _sorted(upstream or {"guard"}),
                Rule.NONE_FAILED,
                component.wave,
            )
        )
    nodes.append(Node("summary", Kind.SUMMARY, _sorted(n.task_id for n in nodes if n.wave), Rule.ALL_DONE))
    return Graph(tuple(nodes))


def _sorted(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids)))

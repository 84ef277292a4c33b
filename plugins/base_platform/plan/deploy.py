"""The deploy plan: which components to deploy, in what order, and what to check first.

Plain data, no Airflow: the DAG is built from the whole catalog, and the plan decides at run
time which steps are selected. Edges come from ``depends_on``, never from wave barriers, so
independent components deploy in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from base_platform.catalog.models import Catalog, Component, Wave


class SelectionError(ValueError):
    """The params ask for something the catalog cannot deploy."""


@dataclass(frozen=True)
class Step:
    component: str
    wave: Wave
    stage: int
    upstream: tuple[str, ...] = ()
    """Dependencies deployed by this run."""
    external: tuple[str, ...] = ()
    """Dependencies outside the selection: checked healthy, never redeployed."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    waves: dict[Wave, tuple[str, ...]] = field(default_factory=dict)

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(s.component for s in self.steps)

    @property
    def external(self) -> tuple[str, ...]:
        """Every dependency this run relies on without deploying it."""
        return tuple(sorted({dep for s in self.steps for dep in s.external}))

    def to_dict(self) -> dict[str, object]:
        return {
            "selected": list(self.selected),
            "external": list(self.external),
            "waves": {w.value: list(names) for w, names in self.waves.items()},
        }


def topological_order(components: Iterable[Component]) -> list[Component]:
    """Dependencies first; ties broken by (wave, stage, name) so the order is stable."""
    pending = {c.name: c for c in components}
    done: set[str] = set()
    order: list[Component] = []
    while pending:
        ready = sorted(
            (c for c in pending.values() if all(d in done or d not in pending for d in c.depends_on)),
            key=lambda c: (c.order, c.name),
        )
        if not ready:
            raise SelectionError(f"dependency cycle among {sorted(pending)}")
        for component in ready:
            order.append(component)
            done.add(component.name)
            del pending[component.name]
    return order


def select(
    catalog: Catalog, waves: Iterable[str] | None = None, components: Iterable[str] | None = None
) -> Plan:
    """The plan for ``waves`` (default all) and ``components`` (default all in those waves)."""
    wanted_waves = {Wave(w) for w in waves} if waves else set(Wave)
    by_name = catalog.by_name
    names = list(components or [])
    unknown = sorted(n for n in names if n not in by_name)
    if unknown:
        raise SelectionError(f"unknown components: {', '.join(unknown)}")
    outside = sorted(n for n in names if by_name[n].wave not in wanted_waves)
    if outside:
        waves_named = sorted(w.value for w in wanted_waves)
        raise SelectionError(f"components not in the selected waves {waves_named}: {', '.join(outside)}")
    chosen = [by_name[n] for n in names] if names else catalog.in_waves(wanted_waves)
    chosen_names = {c.name for c in chosen}
    steps = tuple(
        Step(
            component=c.name,
            wave=c.wave,
            stage=c.stage,
            upstream=tuple(d for d in c.depends_on if d in chosen_names),
            external=tuple(d for d in c.depends_on if d not in chosen_names),
        )
        for c in topological_order(chosen)
    )
    grouped = {w: tuple(s.component for s in steps if s.wave is w) for w in Wave}
    return Plan(steps=steps, waves={w: names for w, names in grouped.items() if names})


def critical_path(catalog: Catalog, durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """Longest dependency chain by duration: the lower bound of any parallel deploy."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for component in topological_order(catalog.components):
        before = max(component.depends_on, key=lambda d: finish[d], default=None)
        finish[component.name] = (finish[before] if before else 0.0) + durations.get(component.name, 0.0)
        via[component.name] = before
    end = max(finish, key=lambda n: finish[n])
    path: list[str] = []
    node: str | None = end
    while node:
        path.append(node)
        node = via[node]
    return finish[end], path[::-1]

"""Teardown order and dependents as plain functions, on a small catalog whose answers are known."""

from __future__ import annotations

import pytest

from base_platform.catalog.models import Catalog, Component
from base_platform.plan.teardown import dependents, teardown_order


def component(name: str, wave: str, *depends_on: str) -> Component:
    return Component.model_validate(
        {
            "name": name,
            "wave": wave,
            "depends_on": list(depends_on),
            "cluster": "platform",
            "namespace": name,
            "template": f"{name}.yaml.j2",
            "project": "platform",
        }
    )


# argocd <- vault <- airflow <- pipelines; argocd <- monitoring (a branch nothing else needs)
CATALOG = Catalog(
    components=(
        component("pipelines", "apps", "airflow"),
        component("airflow", "orchestration", "vault"),
        component("monitoring", "shared", "argocd"),
        component("vault", "core", "argocd"),
        component("argocd", "core"),
    )
)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"pipelines"}, set()),
        ({"airflow"}, {"pipelines"}),
        ({"vault"}, {"airflow", "pipelines"}),  # transitive
        ({"argocd"}, {"vault", "airflow", "pipelines", "monitoring"}),
        ({"vault", "airflow"}, {"pipelines"}),  # the selection itself is never its own dependent
    ],
)
def test_dependents_are_everything_that_needs_the_selection(names: set[str], expected: set[str]) -> None:
    assert dependents(CATALOG, names) == expected


def test_teardown_removes_what_needs_a_component_before_the_component() -> None:
    order = teardown_order(CATALOG, {c.name for c in CATALOG.components})
    assert order[-1] == "argocd" and order.index("pipelines") < order.index("airflow") < order.index("vault")
    for position, name in enumerate(order):
        assert not dependents(CATALOG, {name}) & set(order[position + 1 :]), f"{name} goes before a dependent"


def test_teardown_keeps_only_the_selection_and_ignores_its_order() -> None:
    assert teardown_order(CATALOG, ["vault", "pipelines"]) == ["pipelines", "vault"]
    assert teardown_order(CATALOG, ["pipelines", "vault"]) == ["pipelines", "vault"]
    assert teardown_order(CATALOG, []) == []

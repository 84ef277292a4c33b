"""The deploy plan: order, parallelism and selection, without Airflow."""

from __future__ import annotations

import itertools

import pytest

from base_platform.catalog.loader import load_catalog
from base_platform.catalog.models import Wave
from base_platform.plan.deploy import SelectionError, critical_path, select, topological_order

CATALOG = load_catalog()


def test_order_puts_every_dependency_first_and_is_stable() -> None:
    order = [c.name for c in topological_order(CATALOG.components)]
    assert order == [c.name for c in topological_order(reversed(CATALOG.components))]
    for index, name in enumerate(order):
        assert set(CATALOG.component(name).depends_on) <= set(order[:index])
    assert order[0] == "argocd"


def test_independent_components_share_a_level() -> None:
    """Edges come from depends_on, not waves: vault, cert-manager and the ALB controller run together."""
    steps = {s.component: s for s in select(CATALOG).steps}
    assert steps["vault"].upstream == steps["cert-manager"].upstream == ("argocd",)
    assert steps["service-mesh"].upstream == ("cert-manager",)  # need not wait for vault or monitoring


def test_full_selection() -> None:
    plan = select(CATALOG)
    assert len(plan.selected) == 28 and plan.external == ()
    assert list(plan.waves) == list(Wave) and plan.waves[Wave.CORE][0] == "argocd"


def test_a_later_wave_alone_checks_its_external_dependencies() -> None:
    plan = select(CATALOG, waves=["apps"])
    assert set(plan.selected) == {"platform-ui", "api-gateway", "data-services"}
    assert plan.external == ("airflow", "aws-load-balancer-controller", "monitoring", "service-mesh", "vault")


def test_components_within_waves() -> None:
    plan = select(CATALOG, waves=["core", "shared"], components=["logging", "vault"])
    assert plan.selected == ("vault", "logging")
    assert {s.component: s.external for s in plan.steps} == {"vault": ("argocd",), "logging": ("monitoring",)}


@pytest.mark.parametrize(
    ("waves", "components", "message"),
    [(["core"], ["airflow"], "not in the selected waves"), (None, ["nope"], "unknown components: nope")],
)
def test_bad_selection(waves, components, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        select(CATALOG, waves=waves, components=components)


def test_critical_path_is_the_longest_chain() -> None:
    durations = {c.name: 1.0 for c in CATALOG.components}
    length, path = critical_path(CATALOG, durations)
    assert path[0] == "argocd" and length == len(path)
    for before, after in itertools.pairwise(path):
        assert before in CATALOG.component(after).depends_on
    durations["kubeflow"] = 100.0
    assert "kubeflow" in critical_path(CATALOG, durations)[1]

"""The task graphs of platform_deploy and platform_destroy, as plain data: no Airflow here."""

from __future__ import annotations

from base_platform.catalog.loader import load_catalog
from base_platform.catalog.models import Wave
from base_platform.plan.graph import Kind, Rule, deploy_graph, destroy_graph

CATALOG = load_catalog()
DEPLOY = deploy_graph(CATALOG)
DESTROY = destroy_graph(CATALOG)


def upstream(task_id: str, graph=DEPLOY) -> set[str]:
    """Every task ``task_id`` waits for, directly or not."""
    found: set[str] = set()
    pending = [task_id]
    while pending:
        for up in graph.node(pending.pop()).upstream:
            if up not in found:
                found.add(up)
                pending.append(up)
    return found


def test_deploy_is_plan_approve_components_gates_summary() -> None:
    kinds = [n.kind for n in DEPLOY.nodes]
    assert kinds[:2] == [Kind.PLAN, Kind.APPROVE] and kinds[-1] is Kind.SUMMARY
    assert len(DEPLOY.of_kind(Kind.COMPONENT)) == len(CATALOG.components)
    assert [n.task_id for n in DEPLOY.of_kind(Kind.GATE)] == [f"{w.value}.gate" for w in Wave]


def test_every_component_waits_for_its_dependencies_and_the_approval() -> None:
    for component in CATALOG.components:
        task_id = f"{component.wave.value}.{component.name}"
        before = upstream(task_id)
        assert "approve" in before
        assert {f"{CATALOG.component(d).wave.value}.{d}" for d in component.depends_on} <= before


def test_a_later_wave_waits_for_every_earlier_gate() -> None:
    """A failed gate stops the rollout: no later component can start before it passed."""
    for node in DEPLOY.of_kind(Kind.COMPONENT):
        assert node.wave is not None
        gates = {f"{w.value}.gate" for w in Wave if w.position < node.wave.position}
        assert gates <= upstream(node.task_id), node.task_id


def test_within_a_wave_independent_components_still_run_in_parallel() -> None:
    assert DEPLOY.node("core.vault").upstream == DEPLOY.node("core.cert-manager").upstream == ("core.argocd",)
    assert DEPLOY.node("shared.service-mesh").upstream == ("core.cert-manager", "core.gate")
    assert "shared.monitoring" not in upstream("shared.service-mesh")


def test_deploy_trigger_rules() -> None:
    """none_failed: a dependency that this run did not select (skipped) does not block."""
    assert {n.rule for n in DEPLOY.of_kind(Kind.COMPONENT)} == {Rule.NONE_FAILED}
    assert {n.rule for n in DEPLOY.of_kind(Kind.GATE)} == {Rule.NONE_FAILED}
    assert DEPLOY.node("summary").rule is Rule.ALL_DONE
    assert set(DEPLOY.node("summary").upstream) == {n.task_id for n in DEPLOY.nodes if n.wave}


def test_destroy_deletes_dependents_first() -> None:
    for component in CATALOG.components:
        for dep in component.depends_on:
            dependent = f"{component.wave.value}.{component.name}"
            dependency = f"{CATALOG.component(dep).wave.value}.{dep}"
            assert dependent in upstream(dependency, DESTROY), (dependent, dependency)


def test_destroy_takes_the_control_plane_down_last() -> None:
    control = CATALOG.control_plane
    assert {"argocd", "airflow", "vault", "monitoring", "service-mesh", "cert-manager"} == control
    ordinary = {f"{c.wave.value}.{c.name}" for c in CATALOG.components if c.name not in control}
    for name in control:
        assert ordinary <= upstream(f"{CATALOG.component(name).wave.value}.{name}", DESTROY), name
    assert DESTROY.node("summary").rule is Rule.ALL_DONE


def test_graphs_are_stable() -> None:
    assert deploy_graph(CATALOG) == DEPLOY and destroy_graph(CATALOG) == DESTROY

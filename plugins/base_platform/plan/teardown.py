"""Teardown order: dependents before what they depend on. Plain data, no Airflow."""

from __future__ import annotations

from collections.abc import Iterable

from base_platform.catalog.models import Catalog
from base_platform.plan.deploy import topological_order


def dependents(catalog: Catalog, names: Iterable[str]) -> set[str]:
    """Every component that depends, directly or not, on one of ``names`` (``names`` excluded)."""
    wanted = set(names)
    found: set[str] = set()
    for component in topological_order(catalog.components):
        if any(dep in wanted or dep in found for dep in component.depends_on):
            found.add(component.name)
    return found - wanted


def teardown_order(catalog: Catalog, names: Iterable[str]) -> list[str]:
    """``names`` in reverse dependency order: nothing is deleted before what needs it."""
    wanted = set(names)
    return [c.name for c in reversed(topological_order(catalog.components)) if c.name in wanted]

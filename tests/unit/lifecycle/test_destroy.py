"""platform_destroy's guard as a plain function: what it refuses, and the order it returns."""

from __future__ import annotations

from typing import Any

import pytest

from base_platform.catalog.loader import load_catalog
from base_platform.lifecycle.destroy import GuardError, guard

CATALOG = load_catalog()
EVERYTHING = {c.name for c in CATALOG.components}


def params(**overrides: Any) -> dict[str, Any]:
    return {"environment": "dev", "confirm": "dev", "waves": [], "components": []} | overrides


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"confirm": "prod"}, "confirm must be 'dev'"),
        ({"environment": "prod", "confirm": "prod", "waves": ["apps"]}, "refusing to destroy prod"),
        (
            {"environment": "prod", "confirm": "prod", "allow_prod": True, "include_control_plane": True},
            "refusing include_control_plane in prod",
        ),
        ({}, "choose waves or components"),
        ({"components": ["argocd"]}, "refusing to destroy the control plane"),
        ({"components": ["vault"]}, "vault; set include_control_plane"),  # airflow and argocd run on it
        ({"components": ["data-storage"]}, "depend on the selection and are not selected"),
    ],
)
def test_refusals(overrides: dict[str, Any], why: str) -> None:
    with pytest.raises(GuardError, match=why):
        guard(CATALOG, params(**overrides), EVERYTHING)


def test_everything_with_the_control_plane_puts_it_last() -> None:
    order = guard(
        CATALOG,
        params(waves=["core", "shared", "orchestration", "apps", "base"], include_control_plane=True),
        EVERYTHING,
    )
    control = CATALOG.control_plane
    assert set(order) == EVERYTHING
    assert set(order[-len(control) :]) == control
    assert order[-1] == "argocd"  # everything else runs through it
    for name in order:
        for dep in CATALOG.component(name).depends_on:
            assert order.index(name) < order.index(dep)


def test_a_wave_without_the_control_plane_needs_no_flag() -> None:
    order = guard(CATALOG, params(waves=["base"]), EVERYTHING)
    assert order[0] in {"data-control", "data-distribution"} and "airflow" not in order

"""Which checks a validation scope runs, and running them all whatever fails."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, get_args

from base_platform.catalog.models import Wave
from base_platform.checks.component import run_component_checks
from base_platform.checks.context import CheckContext
from base_platform.checks.report import CheckResult
from base_platform.checks.security import project_restrictions, run_security_checks

Scope = Literal["all", "core", "shared", "orchestration", "apps", "base", "security"]
SCOPES: tuple[str, ...] = get_args(Scope)


def run_scope(ctx: CheckContext, scope: str, components: Collection[str] | None = None) -> list[CheckResult]:
    """The checks of one scope (not ``all``); ``components`` narrows a wave to those deployed."""
    if scope == "security":
        return run_security_checks(ctx)
    wave = Wave(scope)
    return [
        result
        for component in ctx.catalog.in_waves({wave})
        if components is None or component.name in components
        for result in run_component_checks(ctx, component)
    ]


def scopes_of(scope: str) -> list[str]:
    """``all`` is every wave and security."""
    return [s for s in SCOPES if s != "all"] if scope == "all" else [scope]


def run_gate(ctx: CheckContext, wave: Wave, components: Collection[str]) -> list[CheckResult]:
    """A wave's gate: its components' checks again, on what was deployed, and for the core wave
    the AppProjects its bootstrap wrote (no ``*`` destination or repository, an error where the
    environment is hardened)."""
    results = run_scope(ctx, wave.value, components)
    if wave is Wave.CORE:
        results += project_restrictions(ctx)
    return results

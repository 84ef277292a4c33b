"""Typed scenario files for the Argo CD simulator (``sandbox/argocd/scenarios/*.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sandbox.common import load_model

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resource(_Strict):
    """A managed resource; an empty name means "named after the app"."""

    kind: str
    name: str = ""
    group: str = ""
    version: str = "v1"


class Drift(_Strict):
    """A change made in the cluster behind Argo CD's back: ``live`` and ``target`` are the
    fields that differ, merged into the resource's manifest on each side."""

    kind: str
    name: str = ""
    after_seconds: float = Field(default=0.0, ge=0.0, description="after the last successful sync")
    live: dict[str, object]
    target: dict[str, object]


class Behaviour(_Strict):
    """How one app reacts to a sync; every field may be set per app or in ``defaults``."""

    sync_seconds: float = 1.0
    healthy_after_seconds: float = 2.0
    outcome: Literal["Healthy", "Degraded", "SyncFailed"] = "Healthy"
    outcome_by_revision: dict[str, Literal["Healthy", "Degraded", "SyncFailed"]] = Field(default_factory=dict)
    stale_read_seconds: float = 0.0
    reconcile_lag_seconds: float = 0.0
    delete_seconds: float = 0.0
    resources: tuple[Resource, ...] | None = None
    drift: tuple[Drift, ...] = ()

    def outcome_for(self, revision: str) -> str:
        """The outcome of a sync to ``revision`` (as requested: a branch, tag or SHA)."""
        return self.outcome_by_revision.get(revision, self.outcome)


class ExistingApp(_Strict):
    """An Application that exists before any request, e.g. a dependency already deployed."""

    project: str = "default"
    namespace: str = "default"
    repo_url: str = "https://git.example.com/platform/deploy.git"
    path: str = "apps"
    revision: str = "main"
    health: Literal["Healthy", "Degraded", "Progressing", "Missing"] = "Healthy"
    sync: Literal["Synced", "OutOfSync", "Unknown"] = "Synced"
    spec: dict[str, object] | None = Field(
        default=None, description="the whole Application spec; replaces the fields above"
    )


class Scenario(_Strict):
    tokens: tuple[str, ...] = ("sandbox-token",)
    users: dict[str, str] = Field(default_factory=lambda: {"admin": "sandbox-password"})
    lock_default_project: bool = Field(default=False, description="no repos or destinations in 'default'")
    disabled_accounts: tuple[str, ...] = Field(default=(), description="accounts that cannot log in")
    error_rate_5xx: float = Field(default=0.0, ge=0.0, le=1.0)
    clock_offset_seconds: float = Field(
        default=0.0, description="the controller's clock runs this far ahead (+) or behind (-) the host's"
    )
    seed: int = 1
    defaults: Behaviour = Behaviour()
    apps: dict[str, dict[str, object]] = Field(default_factory=dict)
    existing: dict[str, ExistingApp] = Field(default_factory=dict)

    def behaviour(self, app_name: str) -> Behaviour:
        """The defaults overridden by this app's own settings."""
        merged = self.defaults.model_dump() | dict(self.apps.get(app_name, {}))
        return Behaviour.model_validate(merged)


def load_scenario(path: str | Path | None) -> Scenario:
    """Load and check a scenario; a bad one fails naming the file and the key."""
    if path is None:
        return Scenario()
    scenario = load_model(path, Scenario, SCENARIO_DIR)
    for name in scenario.apps:
        try:
            scenario.behaviour(name)
        except ValidationError as exc:
            raise ValueError(f"{path}: apps.{name}: {exc.errors()[0]['msg']}") from exc
    return scenario

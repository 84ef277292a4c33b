"""The component catalog and environment overlays, as typed models.

Unknown keys are errors (``extra="forbid"``); cross-field rules (dependencies, cycles, wave
order) are checked in :mod:`base_platform.catalog.loader`, which knows the file names.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from base_platform.types import StrictModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
QUANTITY_CPU = r"^[0-9]+(\.[0-9]+)?m?$"
QUANTITY_MEMORY = r"^[0-9]+(Ki|Mi|Gi|Ti)?$"
_DURATION = re.compile(r"^(\d+)(s|m|h)$")


class Wave(StrEnum):
    """Deploy waves in order; ``base`` is split further into ordered stages 1 to 4."""

    CORE = "core"
    SHARED = "shared"
    ORCHESTRATION = "orchestration"
    APPS = "apps"
    BASE = "base"

    @property
    def position(self) -> int:
        return list(Wave).index(self)


def parse_duration(value: object) -> int:
    """``"90s"``, ``"15m"``, ``"1h"`` or a number of seconds, as seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 90s, 15m or 1h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


Seconds = Annotated[int, BeforeValidator(parse_duration)]


CheckName = Literal["argocd_api", "vault_health", "certificates_ready"]


class Component(StrictModel):
    """One Argo CD Application of the platform; its name is the Application's name."""

    name: str = Field(pattern=DNS_LABEL)
    wave: Wave
    stage: int = Field(default=1, ge=1, le=4, description="order inside the wave (base: steps 1 to 4)")
    cluster: Literal["platform", "base"]
    namespace: str = Field(pattern=DNS_LABEL)
    depends_on: tuple[str, ...] = ()
    template: str = Field(description="file under include/manifests/applications/")
    project: str = Field(pattern=DNS_LABEL)
    sync_options: tuple[str, ...] = ("CreateNamespace=true",)
    timeout: Seconds = 900
    checks: tuple[CheckName, ...] = Field(default=(), description="extra checks beyond the per-app ones")
    control_plane: bool = Field(
        default=False, description="runs the orchestrator itself: destroyed only on request, and last"
    )

    @property
    def order(self) -> tuple[int, int]:
        return (self.wave.position, self.stage)


class Catalog(StrictModel):
    components: tuple[Component, ...]

    def component(self, name: str) -> Component:
        return self.by_name[name]

    @property
    def by_name(self) -> dict[str, Component]:
        return {c.name: c for c in self.components}

    def in_waves(self, waves: set[Wave]) -> list[Component]:
        return [c for c in self.components if c.wave in waves]

    @property
    def control_plane(self) -> frozenset[str]:
        """The components marked ``control_plane`` and everything they depend on, directly or not."""
        found = {c.name for c in self.components if c.control_plane}
        pending = list(found)
        while pending:
            for dep in self.component(pending.pop()).depends_on:
                if dep not in found:
                    found.add(dep)
                    pending.append(dep)
        return frozenset(found)


class Resources(StrictModel):
    cpu: str = Field(pattern=QUANTITY_CPU)
    memory: str = Field(pattern=QUANTITY_MEMORY)


class Autoscaling(StrictModel):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)


class DriftPolicy(StrictModel):
    """What the nightly drift check does about what it finds."""

    heal: Literal["none", "sync-allowlisted"] = Field(
        default="none", description="sync-allowlisted: sync drifted apps named in heal_allowlist"
    )
    heal_allowlist: tuple[str, ...] = ()
    notify_conn_id: str | None = Field(default=None, description="HTTP connection of a webhook")
    notify_when_clean: bool = Field(default=False, description="also send a message when nothing drifted")


class ApprovalPolicy(StrictModel):
    """Who may approve a deploy that needs approval, and how long the request stays open.

    The user who triggered the run may never approve it, whatever this says.
    """

    users: tuple[str, ...] = Field(default=(), description="usernames of config/roles.yaml")
    roles: tuple[str, ...] = Field(
        default=(), description="every user of config/roles.yaml with one of these roles"
    )
    timeout: Seconds = Field(default=4 * 3600, description="unanswered this long, the run fails")


class Environment(StrictModel):
    """An environment overlay: ``config/environments/<name>.yaml``."""

    name: Literal["dev", "staging", "prod"]
    repo_url: str = Field(pattern=r"^https://")
    target_revision: str = Field(min_length=1)
    clusters: dict[Literal["platform", "base"], str]
    resources: Resources
    monitoring_enabled: bool
    vault_enabled: bool
    autoscaling: Autoscaling
    approval_required: bool
    approval: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy())
    wave_timeouts: dict[Wave, Seconds]
    drift: DriftPolicy = Field(default_factory=lambda: DriftPolicy())

    @property
    def hardened(self) -> bool:
        """Staging and prod get the strict security rules; dev gets warnings."""
        return self.name != "dev"

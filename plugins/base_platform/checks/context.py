"""What checks read: one snapshot of Argo CD's applications, the overlay, the wanted revision."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.models import Catalog, Environment
from base_platform.types import JSON
from base_platform.vault.client import DEFAULT_CONN_ID


@dataclass
class CheckContext:
    hook: ArgoCDHook
    catalog: Catalog
    environment: Environment
    revision: str = ""
    vault_conn_id: str = DEFAULT_CONN_ID
    _trees: dict[str, JSON] = field(default_factory=dict)

    @property
    def desired_revision(self) -> str:
        return self.revision or self.environment.target_revision

    @cached_property
    def applications(self) -> dict[str, JSON]:
        """Every Application Argo CD lists, by name: one call, and no 403-means-missing guessing."""
        items: list[Any] = self.hook.list_applications().get("items") or []
        return {app["metadata"]["name"]: app for app in items}

    def resource_tree(self, name: str) -> JSON:
        if name not in self._trees:
            self._trees[name] = self.hook.resource_tree(name)
        return self._trees[name]

"""Simulator scenarios of a whole platform, built from the real catalog and manifests."""

from __future__ import annotations

from typing import Any

from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import default_catalog, environment
from base_platform.catalog.render import project_names, render_application, render_project

WORKLOAD = [{"kind": "Deployment", "group": "apps"}, {"kind": "Service"}]
NETWORK_POLICY = {"kind": "NetworkPolicy", "group": "networking.k8s.io", "name": "default-deny"}
CERTIFICATE = {"kind": "Certificate", "group": "cert-manager.io", "name": "platform-tls"}


def deployed_platform(
    environment_name: str = "dev", omit: tuple[str, ...] = (), **apps: Any
) -> dict[str, Any]:
    """Every component deployed from its rendered manifest, Synced and Healthy, locked down.

    ``apps`` adds simulator behaviour per app (underscores stand for dashes in names).
    """
    env = environment(environment_name)
    existing = {
        c.name: {"spec": render_application(c, env)["spec"]}
        for c in default_catalog().components
        if c.name not in omit
    }
    return {
        "lock_default_project": True,
        "disabled_accounts": ["admin"],
        "defaults": {
            "sync_seconds": 0.2,
            "healthy_after_seconds": 0.4,
            "resources": [*WORKLOAD, NETWORK_POLICY],
        },
        "apps": {"cert-manager": {"resources": [*WORKLOAD, CERTIFICATE]}}
        | {name.replace("_", "-"): behaviour for name, behaviour in apps.items()},
        "existing": existing,
    }


def install_projects(environment_name: str = "dev") -> None:
    """The rendered AppProjects, as platform_deploy's bootstrap writes them."""
    catalog, env = default_catalog(), environment(environment_name)
    with ArgoCDHook() as hook:
        for name in project_names(catalog):
            hook.upsert_project(render_project(name, catalog, env))

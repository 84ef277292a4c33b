"""Render Argo CD Applications and AppProjects from the catalog, templates and an overlay.

The catalog decides identity and placement (name, project, cluster, namespace, sync
options); ``include/manifests/applications/<name>.yaml`` adds what is specific to the
component (chart path, Helm parameters), with the overlay's values in Jinja. Output is
deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

from base_platform.catalog.loader import CatalogError
from base_platform.catalog.models import Catalog, Component, Environment
from base_platform.types import JSON

MANIFESTS_DIR = Path(__file__).resolve().parents[3] / "include" / "manifests"
ARGOCD_NAMESPACE = "argocd"


@cache
def _templates(root: Path) -> jinja2.Environment:
    # YAML, not HTML: autoescaping would corrupt values.
    return jinja2.Environment(  # noqa: S701
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _render_yaml(relative: str, context: dict[str, Any], root: Path) -> JSON:
    path = root / relative
    try:
        text = _templates(root).get_template(relative).render(**context)
        data = yaml.safe_load(text) or {}
    except jinja2.TemplateNotFound as exc:
        raise CatalogError(path, "(file)", "template not found") from exc
    except jinja2.UndefinedError as exc:
        raise CatalogError(path, "(template)", str(exc)) from exc
    except yaml.YAMLError as exc:
        raise CatalogError(path, "(yaml)", str(exc).replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise CatalogError(path, "(root)", "a template must render to a mapping")
    return data


def deep_merge(base: JSON, overlay: JSON) -> JSON:
    """Mappings merge key by key; anything else in ``overlay`` replaces ``base``."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def labels(component: Component, env: Environment) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "base-platform",
        "platform.base/component": component.name,
        "platform.base/wave": component.wave.value,
        "platform.base/cluster": component.cluster,
        "platform.base/environment": env.name,
    }


def render_application(
    component: Component, env: Environment, revision: str | None = None, root: Path = MANIFESTS_DIR
) -> JSON:
    """The Application body for ``POST /api/v1/applications``.

    :param revision: overrides the overlay's ``target_revision``.
    """
    base: JSON = {
        "metadata": {
            "name": component.name,
            "namespace": ARGOCD_NAMESPACE,
            "labels": labels(component, env),
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": component.project,
            "source": {"repoURL": env.repo_url, "targetRevision": revision or env.target_revision},
            "destination": {"server": env.clusters[component.cluster], "namespace": component.namespace},
            "syncPolicy": {
                "syncOptions": list(component.sync_options),
                "retry": {"limit": 3, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}},
            },
            "revisionHistoryLimit": 10,
        },
    }
    context = {
        "env": env,
        "component": component,
        "resources": env.resources,
        "autoscaling": env.autoscaling,
    }
    app = deep_merge(base, _render_yaml(f"applications/{component.template}", context, root))
    helm = app["spec"]["source"].get("helm", {})
    if "parameters" in helm:
        helm["parameters"] = sorted(helm["parameters"], key=lambda p: p["name"])
    return app


def render_project(name: str, catalog: Catalog, env: Environment, root: Path = MANIFESTS_DIR) -> JSON:
    """The AppProject, with exactly the destinations its components use."""
    project = _render_yaml(f"projects/{name}.yaml", {"env": env}, root)
    destinations = sorted(
        {(env.clusters[c.cluster], c.namespace) for c in catalog.components if c.project == name}
    )
    if not destinations:
        raise CatalogError(root / f"projects/{name}.yaml", "metadata.name", "no component uses this project")
    project.setdefault("spec", {})["destinations"] = [{"server": s, "namespace": n} for s, n in destinations]
    return project


def project_names(catalog: Catalog) -> list[str]:
    return sorted({c.project for c in catalog.components})

"""Load the catalog and overlays; every error names the file and the key.

PyYAML silently keeps the last of two equal mapping keys, so the loader refuses duplicate
keys itself. Cross-component rules: unknown dependencies, duplicate names, cycles, and a
dependency that deploys later than the component that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from base_platform.catalog.models import Catalog, Component, Environment, Wave

M = TypeVar("M", bound=BaseModel)

CONFIG_DIR = Path(
    os.environ.get("BASE_PLATFORM_CONFIG_DIR") or Path(__file__).resolve().parents[3] / "config"
).resolve()
ENVIRONMENTS = ("dev", "staging", "prod")


def default_environment() -> str:
    """The environment this deployment manages (``BASE_PLATFORM_ENVIRONMENT``, unset: dev): the DAGs'
    default param and schedules, and what the platform page and ``/metrics`` show unless asked.

    :raises CatalogError: a value that is no environment (``production``): a typo must not show
        dev's platform as this deployment's.
    """
    configured = os.environ.get("BASE_PLATFORM_ENVIRONMENT") or "dev"
    if configured not in ENVIRONMENTS:
        raise CatalogError(
            "$BASE_PLATFORM_ENVIRONMENT", "value", f"{configured!r} is not one of {', '.join(ENVIRONMENTS)}"
        )
    return configured


class CatalogError(ValueError):
    """A configuration error, with the file and the key that caused it."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        super().__init__(f"{path}: {key}: {message}")
        self.path, self.key = str(path), key


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(path, "(yaml)", str(exc).replace("\n", " ")) from exc
    except OSError as exc:
        raise CatalogError(path, "(file)", str(exc)) from exc


def _key_path(loc: Iterable[Any], data: Any) -> str:
    """``components[3] (vault).depends_on`` from a pydantic error location."""
    parts: list[str] = []
    node = data
    loc = list(loc)
    for index, item in enumerate(loc):
        following = loc[index + 1] if index + 1 < len(loc) else None
        if isinstance(node, Mapping) and not _has(node, item) and _has(node, following):
            continue  # a tagged union's tag (``source.files.format``): not a key of the file
        if isinstance(item, int):
            name = (
                node[item].get("name") if isinstance(node, list) and isinstance(node[item], Mapping) else None
            )
            parts[-1] += f"[{item}]" + (f" ({name})" if name else "")
        else:
            parts.append(str(item))
        node = node[item] if isinstance(node, (list, Mapping)) and _has(node, item) else None
    return ".".join(parts) or "(root)"


def _has(node: Any, item: Any) -> bool:
    return (isinstance(node, list) and isinstance(item, int) and item < len(node)) or (
        isinstance(node, Mapping) and item in node
    )


def load_model(model: type[M], path: Path) -> M:
    """``path``'s YAML as ``model``; any error names the file and the key."""
    return _validate(model, read_yaml(path), path)


def _validate(model: type[M], data: Any, path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CatalogError(path, _key_path(first["loc"], data), first["msg"] + more) from exc


def check_graph(catalog: Catalog, path: Path) -> None:
    """Duplicate names, unknown dependencies, later-wave dependencies and cycles."""
    seen: set[str] = set()
    for index, component in enumerate(catalog.components):
        if component.name in seen:
            raise CatalogError(path, f"components[{index}].name", f"duplicate component {component.name!r}")
        seen.add(component.name)
    by_name = catalog.by_name
    for index, component in enumerate(catalog.components):
        key = f"components[{index}] ({component.name}).depends_on"
        for dep in component.depends_on:
            if dep not in by_name:
                raise CatalogError(path, key, f"unknown component {dep!r}")
            if by_name[dep].order > component.order:
                raise CatalogError(
                    path,
                    key,
                    f"{dep!r} deploys later ({by_name[dep].wave} stage {by_name[dep].stage}) "
                    f"than {component.name!r} ({component.wave} stage {component.stage})",
                )
    cycle = find_cycle(by_name)
    if cycle:
        raise CatalogError(path, "components.depends_on", "dependency cycle " + " -> ".join(cycle))


def find_cycle(components: Mapping[str, Component]) -> list[str]:
    """A dependency cycle as a list of names (first == last), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        stack.append(name)
        for dep in components[name].depends_on:
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return []

    for name in sorted(components):
        if name not in state and (found := visit(name)):
            return found
    return []


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or CONFIG_DIR / "platform.yaml"
    catalog = load_model(Catalog, path)
    check_graph(catalog, path)
    return catalog


def load_environment(name: str, config_dir: Path | None = None) -> Environment:
    path = (config_dir or CONFIG_DIR) / "environments" / f"{name}.yaml"
    env = load_model(Environment, path)
    if env.name != name:
        raise CatalogError(path, "name", f"is {env.name!r} but the file is for {name!r}")
    for cluster in ("platform", "base"):
        if cluster not in env.clusters:
            raise CatalogError(path, "clusters", f"no destination server for cluster {cluster!r}")
    for wave in Wave:
        if wave not in env.wave_timeouts:
            raise CatalogError(path, "wave_timeouts", f"no timeout for wave {wave.value!r}")
    if env.autoscaling.min_replicas > env.autoscaling.max_replicas:
        raise CatalogError(path, "autoscaling", "min_replicas is greater than max_replicas")
    if env.approval_required and not (env.approval.users or env.approval.roles):
        raise CatalogError(path, "approval", "approval_required needs approvers: users or roles")
    catalog = load_catalog(config_dir / "platform.yaml") if config_dir else default_catalog()
    known = {c.name for c in catalog.components}
    for index, app in enumerate(env.drift.heal_allowlist):
        if app not in known:
            raise CatalogError(
                path, f"drift.heal_allowlist[{index}]", f"{app!r} is not a component of the catalog"
            )
    return env


@cache
def environment(name: str) -> Environment:
    """An overlay of the project's config, loaded once per process."""
    return load_environment(name)


@cache
def default_catalog() -> Catalog:
    """The project's catalog, loaded once per process (tasks and DAG parsing share it)."""
    return load_catalog()

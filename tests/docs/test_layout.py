"""The README's Layout is the tree: each package it names exists, and each package is named.

The fourteen BASE modules each have their package under ``pipelines/``, and
``docs/architecture.md``'s module map points at those same packages.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "base_platform"
BASE_MODULES = (
    "data_ingestion",
    "schema_contracts",
    "data_quality",
    "data_security",
    "data_storage",
    "metadata_discovery",
    "quality_monitoring",
    "event_coordination",
    "pipeline_management",
    "data_control",
    "data_distribution",
    "data_streaming",
    "feature_engineering",
    "multimodal_processing",
)


def layout_tree() -> list[str]:
    """The folders of the README's Layout block, each with its parents (``a/b/``)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- layout", 1)[1].split("```", 2)[1]
    paths: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, path) of the folders enclosing the line
    for line in block.splitlines()[1:]:
        found = re.match(r"^(\s*)((?:\S+/\s*)+)", line)
        if not found:
            continue
        indent = len(found[1])
        stack = [(i, path) for i, path in stack if i < indent]
        prefix = stack[-1][1] if stack else ""
        names = [prefix + name for name in found[2].split()]
        paths += names
        stack.append((indent, names[-1]))
    return paths


def packages_under(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob("*/__init__.py")}


def test_every_folder_the_layout_names_exists() -> None:
    paths = layout_tree()
    assert "plugins/base_platform/pipelines/data_ingestion/" in paths, paths
    missing = [path for path in paths if not (ROOT / path).is_dir()]
    assert missing == []


def test_every_package_is_in_the_layout() -> None:
    paths = set(layout_tree())
    for folder in (PACKAGE, PACKAGE / "pipelines"):
        relative = folder.relative_to(ROOT).as_posix()
        unnamed = {name for name in packages_under(folder) if f"{relative}/{name}/" not in paths}
        assert unnamed == set(), f"{relative}: packages the README's Layout does not name"


def test_each_base_module_has_its_package_and_the_architecture_map_points_at_it() -> None:
    assert set(BASE_MODULES) <= packages_under(PACKAGE / "pipelines")
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    module_map = architecture.split("## The 14 BASE modules", 1)[1].split("\n## ", 1)[0]
    for module in BASE_MODULES:
        assert re.search(rf"^\| {module} \| `pipelines/{module}/`", module_map, re.M), module

"""Every relative link in the README and docs/ resolves, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors, and explicit ``<a id>`` ones."""
    text = page.read_text()
    found = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not ours to check here
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        outside = not resolved.exists() or ROOT not in [resolved, *resolved.parents]
        if outside or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            broken.append(target)
    assert broken == []


def test_nothing_points_outside_the_repository() -> None:
    assert [p.name for p in PAGES if "../shared" in p.read_text()] == []


def test_the_readme_stays_short() -> None:
    assert (ROOT / "README.md").stat().st_size <= 15 * 1024

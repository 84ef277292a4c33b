"""The import contracts hold, and they bite: an import that breaks a layer fails ``lint-imports``.

``make test-fast`` runs ``lint-imports`` on the tree. These tests copy the package, add one
import that a contract forbids, and check that ``lint-imports`` then fails naming that
contract, so a contract that checks nothing (a typo in a module name, say) cannot pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(root / "plugins")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and the contracts, to break on purpose."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "added", "contract"),
    [
        (  # the spec sits at the bottom of the BASE modules; storage is above it
            "pipelines/spec.py",
            "from base_platform.pipelines.data_storage import tables",
            "BASE module layers",
        ),
        (  # a plan is plain data: it never reaches the Argo CD client
            "plan/graph.py",
            "from base_platform.argocd import hooks",
            "Platform layers",
        ),
        (  # the drift comparison is pure, and so is everything it imports
            "argocd/application.py",
            "from airflow.sdk import BaseHook",
            "Pure modules import no Airflow",
        ),
        (  # a cycle inside one package: the engine already imports the breaker
            "pipelines/pipeline_management/breaker.py",
            "from base_platform.pipelines.pipeline_management import engine",
            "No cycles between sibling packages or modules",
        ),
    ],
)
def test_an_import_that_breaks_a_contract_fails_lint_imports(
    tree: Path, module: str, added: str, contract: str
) -> None:
    path = tree / "plugins" / "base_platform" / module
    path.write_text(path.read_text() + f"\n{added}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout


def loaded_after_importing(modules: list[str], top_names: tuple[str, ...]) -> list[str]:
    """The modules under ``top_names`` a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {top_names!r})))\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT / "plugins")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return loaded


def test_the_drift_comparison_loads_no_airflow() -> None:
    """``drift/compare.py`` runs anywhere: importing it must not import Airflow."""
    assert loaded_after_importing(["base_platform.drift.compare"], ("airflow",)) == []


def test_no_package_init_loads_a_heavy_library() -> None:
    """Importing a package (as a DAG file or the triggerer does on the way to a module) loads no
    pyarrow, pyiceberg, DataFusion, DuckDB, Polars or pandas: only the modules that need them do."""
    packages = sorted(
        ".".join(init.parent.relative_to(ROOT / "plugins").parts)
        for init in (ROOT / "plugins" / "base_platform").rglob("__init__.py")
    )
    heavy = ("pyarrow", "pyiceberg", "datafusion", "duckdb", "polars", "pandas")
    assert len(packages) > 20 and loaded_after_importing(packages, heavy) == []

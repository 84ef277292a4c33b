"""The catalog and overlays load, and every malformed one fails naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from base_platform.catalog.loader import CONFIG_DIR, CatalogError, load_catalog, load_environment
from base_platform.catalog.models import Wave

BASE_MODULES = {
    1: {"data-ingestion", "data-quality", "data-storage", "data-security"},
    2: {"feature-engineering", "multimodal-processing", "data-streaming", "quality-monitoring"},
    3: {"pipeline-management", "event-coordination", "metadata-discovery", "schema-contracts"},
    4: {"data-distribution", "data-control"},
}


def test_catalog_has_the_platform_in_its_waves() -> None:
    catalog = load_catalog()
    by_wave = {w: {c.name for c in catalog.components if c.wave is w} for w in Wave}
    assert by_wave[Wave.CORE] == {"argocd", "vault", "cert-manager", "aws-load-balancer-controller"}
    assert by_wave[Wave.SHARED] == {"monitoring", "logging", "service-mesh"}
    assert by_wave[Wave.ORCHESTRATION] == {"airflow", "kubeflow", "mlflow", "argo-workflows"}
    assert by_wave[Wave.APPS] == {"platform-ui", "api-gateway", "data-services"}
    for stage, modules in BASE_MODULES.items():
        assert {c.name for c in catalog.components if c.wave is Wave.BASE and c.stage == stage} == modules
    for c in catalog.in_waves({Wave.BASE}):
        assert (c.cluster, c.namespace, c.project) == ("base", f"base-{c.name}", "base-layer")
        assert {"data-services", "vault"} <= set(c.depends_on)


def test_dependency_matrix_as_specified() -> None:
    deps = {c.name: set(c.depends_on) for c in load_catalog().components}
    assert deps["monitoring"] == {"vault", "cert-manager"}
    assert deps["logging"] == {"vault", "monitoring"}
    assert deps["service-mesh"] == {"cert-manager"}
    assert deps["airflow"] == deps["kubeflow"] == {"monitoring", "vault", "service-mesh"}
    assert deps["mlflow"] == deps["argo-workflows"] == {"monitoring", "vault"}
    assert deps["platform-ui"] == {"monitoring", "airflow", "vault", "aws-load-balancer-controller"}
    assert deps["api-gateway"] == {"monitoring", "vault", "service-mesh"}
    assert deps["data-services"] == {"monitoring", "airflow", "vault"}
    assert "data-ingestion" in deps["data-quality"]


def test_everything_depends_on_argocd() -> None:
    catalog = load_catalog()
    deps = {c.name: set(c.depends_on) for c in catalog.components}

    def reaches(name: str) -> bool:
        return "argocd" in deps[name] or any(reaches(d) for d in deps[name])

    assert all(reaches(n) for n in deps if n != "argocd")


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_overlays_load(env: str) -> None:
    overlay = load_environment(env)
    assert overlay.name == env and set(overlay.clusters) == {"platform", "base"}


def test_overlay_values_as_specified() -> None:
    dev, prod = load_environment("dev"), load_environment("prod")
    assert (dev.resources.cpu, dev.resources.memory) == ("100m", "256Mi")
    assert (prod.resources.cpu, prod.resources.memory) == ("500m", "1Gi")
    assert (prod.autoscaling.min_replicas, prod.autoscaling.max_replicas) == (2, 20)
    assert prod.approval_required and not dev.approval_required


def _catalog_with(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((CONFIG_DIR / "platform.yaml").read_text())
    edit(data["components"])
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _by_name(components: list[dict], name: str) -> dict:
    return next(c for c in components if c["name"] == name)


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (
            lambda cs: _by_name(cs, "vault").update(colour="red"),
            "components[1] (vault).colour",
            "Extra inputs",
        ),
        (
            lambda cs: _by_name(cs, "vault").update(depends_on=["argocd", "vaultt"]),
            "components[1] (vault).depends_on",
            "unknown component 'vaultt'",
        ),
        (
            lambda cs: _by_name(cs, "argocd").update(depends_on=["monitoring"]),
            "components[0] (argocd).depends_on",
            "'monitoring' deploys later",
        ),
        (
            lambda cs: cs.append(dict(_by_name(cs, "vault"))),
            "components[28].name",
            "duplicate component 'vault'",
        ),
        (
            lambda cs: (
                _by_name(cs, "cert-manager").update(depends_on=["argocd", "aws-load-balancer-controller"])
                or _by_name(cs, "aws-load-balancer-controller").update(depends_on=["cert-manager"])
            ),
            "components.depends_on",
            "dependency cycle",
        ),
        (
            lambda cs: _by_name(cs, "vault").update(wave="core2"),
            "components[1] (vault).wave",
            "Input should be",
        ),
        (
            lambda cs: _by_name(cs, "vault").update(timeout="soon"),
            "components[1] (vault).timeout",
            "not a duration",
        ),
        (
            lambda cs: _by_name(cs, "vault").update(checks=["vibes"]),
            "components[1] (vault).checks[0]",
            "Input should",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-dependency",
        "later-wave",
        "duplicate",
        "cycle",
        "bad-wave",
        "bad-duration",
        "unknown-check",
    ],
)
@pytest.mark.slow
def test_malformed_catalog_names_file_and_key(tmp_path: Path, edit, key: str, message: str) -> None:
    path = _catalog_with(tmp_path, edit)
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert err.value.path == str(path) and err.value.key == key, str(err.value)
    assert message in str(err.value)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text("components:\n  - name: a\n    name: b\n")
    with pytest.raises(CatalogError, match="duplicate key 'name'"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["clusters"].pop("base"), "clusters"),
        (lambda d: d["wave_timeouts"].pop("apps"), "wave_timeouts"),
        (lambda d: d.update(name="prod"), "name"),
        (lambda d: d["resources"].update(cpu="lots"), "resources.cpu"),
        (lambda d: d.update(approval="yes"), "approval"),
        (lambda d: d["drift"].update(heal="always"), "drift.heal"),
        (lambda d: d["drift"].update(heal_allowlist=["monitoring", "ghost"]), "drift.heal_allowlist[1]"),
    ],
)
def test_malformed_overlay_names_file_and_key(tmp_path: Path, edit, key: str) -> None:
    data = yaml.safe_load((CONFIG_DIR / "environments" / "dev.yaml").read_text())
    edit(data)
    (tmp_path / "environments").mkdir()
    path = tmp_path / "environments" / "dev.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "platform.yaml").write_text((CONFIG_DIR / "platform.yaml").read_text())
    with pytest.raises(CatalogError) as err:
        load_environment("dev", tmp_path)
    assert err.value.path == str(path) and err.value.key == key, str(err.value)

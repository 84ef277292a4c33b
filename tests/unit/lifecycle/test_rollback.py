"""platform_rollback's plain functions: what it selects, in which order, and how it judges the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from base_platform.argocd.actions import ActionError, start_sync, wait_until_done
from base_platform.argocd.application import PIN_ANNOTATION, pin_annotation
from base_platform.argocd.hooks import ArgoCDHook
from base_platform.catalog.loader import load_catalog
from base_platform.lifecycle.rollback import outcome, resolve_targets, selection
from tests.scenarios import deployed_platform

CATALOG = load_catalog()


def test_a_wave_is_rolled_back_dependents_first() -> None:
    names = selection(CATALOG, [], "orchestration")
    assert set(names) == {c.name for c in CATALOG.components if c.wave.value == "orchestration"}
    for position, name in enumerate(names):
        for later in names[position + 1 :]:
            assert name not in CATALOG.component(later).depends_on, f"{later} needs {name} yet goes after it"


@pytest.mark.parametrize(
    ("components", "wave", "why"),
    [
        ([], "", "choose components or a wave"),
        (["vault", "airflow"], "core", "components not in wave core: airflow"),
    ],
)
def test_an_empty_or_ambiguous_choice_is_refused(components: list[str], wave: str, why: str) -> None:
    with pytest.raises(ActionError, match=why):
        selection(CATALOG, components, wave)


def app(revision: str, health: str = "Healthy", pin: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "vault", "annotations": {PIN_ANNOTATION: pin} if pin else {}},
        "status": {
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": health},
        },
    }


TARGET = {"app_name": "vault", "history_id": 3, "revision": "a" * 40}


def test_done_means_at_the_target_healthy_and_pinned_to_that_history_entry() -> None:
    pinned = pin_annotation(3, "a" * 40)
    assert outcome(app("a" * 40, pin=pinned), TARGET)["outcome"] == "done"
    assert outcome(app("a" * 40), TARGET)["outcome"] != "done"  # the pin is missing
    assert (
        outcome(app("a" * 40, pin=pin_annotation(2, "a" * 40)), TARGET)["outcome"] != "done"
    )  # another entry
    assert outcome(app("b" * 40, pin=pinned), TARGET)["outcome"] != "done"  # another revision
    assert outcome(app("a" * 40, "Degraded", pinned), TARGET)["outcome"] != "done"


@pytest.mark.slow
def test_targets_are_resolved_once_from_history(start_simulator: Callable[..., Any]) -> None:
    start_simulator(deployed_platform(omit=("mlflow",)))
    params = {"components": ["vault"], "wave": "", "to": "previous"}
    with ArgoCDHook() as hook:
        for revision in ("v1", "v2"):  # two syncs: two history entries
            started = start_sync(hook, "vault", revision=revision)
            assert wait_until_done(hook, "vault", started.wait_spec(), 30, 0.1).done
        history = hook.get_application("vault")["status"]["history"]
        (target,) = resolve_targets(CATALOG, params, hook)
        assert target == {
            "app_name": "vault",
            "history_id": history[-2]["id"],
            "revision": history[-2]["revision"],
        }
        with pytest.raises(ActionError, match="not in Argo CD, nothing to roll back: mlflow"):
            resolve_targets(CATALOG, params | {"components": ["vault", "mlflow"]}, hook)

"""Typed scenario files for the Vault simulator (``sandbox/vault/scenarios/*.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.common import load_model

SCENARIO_DIR = Path(__file__).parent / "scenarios"


DEFAULT_POLICIES: dict[str, tuple[str, ...]] = {"platform": ("secret/", "transit/")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class User(_Strict):
    password: str
    policies: tuple[str, ...] = ()


class Scenario(_Strict):
    """What the simulated Vault holds at start. Policies are path prefixes ("*" for all)."""

    initialized: bool = True
    sealed: bool = False
    root_token: str = "sandbox-root-token"
    users: dict[str, User] = Field(
        default_factory=lambda: {"airflow": User(password="sandbox-vault-password", policies=("platform",))}
    )
    policies: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_POLICIES))
    kv: dict[str, dict[str, Any]] = Field(default_factory=dict, description="'mount/path' -> data")
    transit_keys: tuple[str, ...] = ("pipelines",)
    token_ttl_seconds: int = 3600


def load_scenario(path: str | Path | None) -> Scenario:
    """Load and check a scenario; a bad one fails naming the file and the key."""
    return Scenario() if path is None else load_model(path, Scenario, SCENARIO_DIR)

"""The role model of config/roles.yaml and the exact FAB permissions each role should hold.

Kept free of Flask and FAB so the grants can be computed and tested without a database;
``base_platform.auth.sync`` applies them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from base_platform.catalog.loader import CONFIG_DIR, load_model
from base_platform.types import StrictModel

Permission = tuple[str, str]  # (action, resource), as FAB names them

# FAB's resource names; DAG-level resources are "<prefix><dag_id>".
DAGS = "DAGs"
DAG_PREFIX = "DAG:"
DAG_RUN_PREFIX = "DAG Run:"
BUILTIN_ROLES = ("Admin", "Op", "User", "Viewer", "Public")
# Publishes or discards the batch an open circuit breaker holds: a failed audit reaches `main`
# through it, so only `release_batches` decides who triggers it, never a `pipeline_*` pattern.
RELEASE_DAG = "pipeline_control"


class DagRule(StrictModel):
    match: str = Field(min_length=1, description="fnmatch pattern on the dag_id")
    grant: Literal["read", "trigger"]


class DatasetRule(StrictModel):
    match: str = Field(min_length=1, description="fnmatch pattern on the dataset's name")
    grant: Literal["read", "none"]


class Role(StrictModel):
    copy_of: Literal["Admin", "Op", "User", "Viewer"] | None = None
    dags: tuple[DagRule, ...] = ()
    datasets: tuple[DatasetRule, ...] = Field(
        default=(), description="who may read which datasets through the API; an Admin copy reads all"
    )
    release_batches: bool = Field(
        default=False, description="may publish or discard a batch an open breaker holds (pipeline_control)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Role:
        if self.copy_of and self.dags:
            raise ValueError("a role is either `copy_of` a built-in role or has `dags` rules, not both")
        if not self.copy_of and not self.dags:
            raise ValueError("a role needs `copy_of` or at least one `dags` rule")
        if self.copy_of and self.release_batches:
            raise ValueError("`release_batches` needs `dags` rules: a copy's grants are the built-in role's")
        return self

    def may_read_dataset(self, name: str) -> bool:
        """The first matching rule decides; no rule, no access (but an Admin copy reads all)."""
        if self.copy_of == "Admin":
            return True
        return next((r.grant == "read" for r in self.datasets if fnmatch.fnmatchcase(name, r.match)), False)

    def may_release_batches(self) -> bool:
        return self.copy_of == "Admin" or self.release_batches

    def grant_for(self, dag_id: str) -> str | None:
        """The first matching rule decides; None means the DAG is invisible to this role. On
        ``RELEASE_DAG`` a rule gives at most read: trigger comes from ``release_batches`` alone."""
        grant = next((rule.grant for rule in self.dags if fnmatch.fnmatchcase(dag_id, rule.match)), None)
        if dag_id == RELEASE_DAG:
            return "trigger" if self.release_batches else ("read" if grant else None)
        return grant


class User(StrictModel):
    username: str = Field(min_length=1)
    role: str
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    password_env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    first_name: str = "BASE"
    last_name: str = "user"


class RolesConfig(StrictModel):
    roles: dict[str, Role]
    users: tuple[User, ...] = ()

    @model_validator(mode="after")
    def _known_roles_and_unique_users(self) -> RolesConfig:
        clash = set(self.roles) & set(BUILTIN_ROLES)
        if clash:
            raise ValueError(f"role names clash with FAB's built-in roles: {sorted(clash)}")
        seen: set[str] = set()
        for user in self.users:
            if user.role not in self.roles:
                raise ValueError(f"user {user.username!r} has unknown role {user.role!r}")
            if user.username in seen:
                raise ValueError(f"duplicate user {user.username!r}")
            seen.add(user.username)
        return self


def may_release_batches(config: RolesConfig, username: str | None) -> bool:
    """Whether the user who triggered a ``RELEASE_DAG`` run may release a batch: a user of this
    file whose role is an Admin copy or has ``release_batches``. Anyone else (a user made outside
    this file, a run with no user) may not."""
    user = next((u for u in config.users if u.username == username), None)
    return user is not None and config.roles[user.role].may_release_batches()


def load_roles(path: Path | None = None) -> RolesConfig:
    return load_model(RolesConfig, path or CONFIG_DIR / "roles.yaml")


def dag_permissions(grant: str, dag_id: str) -> set[Permission]:
    """What ``read`` and ``trigger`` mean in FAB terms for one DAG.

    Triggering needs edit on the DAG and create on its runs (FAB checks both).
    """
    perms = {("can_read", DAG_PREFIX + dag_id)}
    if grant == "trigger":
        perms |= {("can_edit", DAG_PREFIX + dag_id), ("can_create", DAG_RUN_PREFIX + dag_id)}
    return perms


def scoped_role_permissions(
    role: Role, viewer: Iterable[Permission], dag_ids: Iterable[str]
) -> set[Permission]:
    """Viewer's pages without the global DAG grant, plus the per-DAG grants of ``role``."""
    perms = {perm for perm in viewer if perm[1] != DAGS or perm[0] == "can_access_menu"}
    for dag_id in dag_ids:
        if grant := role.grant_for(dag_id):
            perms |= dag_permissions(grant, dag_id)
    return perms


def approvers(
    users: Iterable[str], roles: Iterable[str], config: RolesConfig, exclude: str | None = None
) -> list[str]:
    """Usernames that may answer an approval: those named, and every user of a named role,
    less ``exclude`` (the user who asked: nobody approves their own request)."""
    wanted_roles = set(roles)
    named = set(users) | {u.username for u in config.users if u.role in wanted_roles}
    return sorted(named - {exclude})

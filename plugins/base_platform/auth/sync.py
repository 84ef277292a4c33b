"""Make Airflow's FAB roles and users match config/roles.yaml: ``python -m base_platform.auth.sync``.

Idempotent: roles converge to exactly the grants the file implies (stale grants are removed),
users are created or have their role and password reset. DAG ids come from parsing the DAGs
folder, so the grants exist before the dag-processor has seen a DAG. Passwords come from the
environment variables the file names and are never printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from base_platform.auth.roles import Permission, Role, RolesConfig, load_roles, scoped_role_permissions
from base_platform.catalog.loader import CatalogError


def dag_ids() -> list[str]:
    """Every DAG in the DAGs folder; an import error stops the sync rather than hide a DAG."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(safe_mode=False)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors, fix them first: {sorted(bag.import_errors)}")
    return sorted(bag.dag_ids)


def role_permissions(sm: Any, role: Role, ids: Iterable[str]) -> set[Permission]:
    if role.copy_of:
        return {(p.action.name, p.resource.name) for p in sm.find_role(role.copy_of).permissions}
    viewer = {(p.action.name, p.resource.name) for p in sm.find_role("Viewer").permissions}
    return scoped_role_permissions(role, viewer, ids)


def describe_role(role: Role, ids: Iterable[str]) -> str:
    if role.copy_of:
        return f"copy of {role.copy_of}"
    grants = [f"{dag_id}={grant}" for dag_id in ids if (grant := role.grant_for(dag_id))]
    return ", ".join(grants) or "no DAGs"


def converge_role(sm: Any, name: str, wanted: set[Permission]) -> tuple[int, int]:
    """Add what is missing and remove what is no longer wanted; returns (added, removed)."""
    fab_role = sm.add_role(name)  # returns the existing role when there is one
    held = {(p.action.name, p.resource.name): p for p in fab_role.permissions}
    for key in sorted(set(held) - wanted):
        sm.remove_permission_from_role(fab_role, held[key])
    for action, resource in sorted(wanted - set(held)):
        perm = sm.get_permission(action, resource) or sm.create_permission(action, resource)
        sm.add_permission_to_role(fab_role, perm)
    return len(wanted - set(held)), len(set(held) - wanted)


def converge_users(sm: Any, config: RolesConfig, env: dict[str, str]) -> None:
    missing = [u.password_env for u in config.users if not env.get(u.password_env)]
    if missing:
        raise SystemExit(f"set these environment variables first: {', '.join(missing)}")
    for user in config.users:
        role = sm.find_role(user.role)
        password = env[user.password_env]
        existing = sm.find_user(username=user.username)
        if existing is None:
            sm.add_user(user.username, user.first_name, user.last_name, user.email, role, password)
            print(f"user {user.username}: created with role {user.role}")
            continue
        existing.roles = [role]
        existing.email = user.email
        sm.update_user(existing)
        sm.reset_password(existing.id, password)
        print(f"user {user.username}: role {user.role}, password reset from ${user.password_env}")


def sync(config: RolesConfig, ids: list[str], env: dict[str, str]) -> None:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # FAB's built-in roles, which `copy_of` and the Viewer pages come from
        for name, role in config.roles.items():
            added, removed = converge_role(sm, name, role_permissions(sm, role, ids))
            print(f"role {name}: {describe_role(role, ids)} (+{added} -{removed} grants)")
        converge_users(sm, config, env)


def main(argv: list[str] | None = None) -> int:
    path = Path(argv[0]) if argv else None
    try:
        config = load_roles(path)
    except CatalogError as exc:
        print(exc, file=sys.stderr)
        return 3
    sync(config, dag_ids(), dict(os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

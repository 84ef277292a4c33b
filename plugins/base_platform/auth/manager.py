"""The FAB auth manager, with approvers of human-in-the-loop tasks named by username.

FAB identifies a user by a database id, which no config file can know; the deploy approval
names its approvers by the usernames of ``config/roles.yaml`` (see
:class:`base_platform.deploy.dag.DeployApprovalOperator`). Set
``AIRFLOW__CORE__AUTH_MANAGER=base_platform.auth.manager.PlatformFabAuthManager``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager


class PlatformFabAuthManager(FabAuthManager):
    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        """An assigned user, by username (or by FAB id, as Airflow's own check does)."""
        return user.get_name() in assigned_users or str(user.get_id()) in assigned_users

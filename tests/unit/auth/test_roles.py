"""config/roles.yaml: every role boundary as FAB permissions, and load errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from base_platform.auth.roles import (
    DagRule,
    DatasetRule,
    Role,
    load_roles,
    may_release_batches,
    scoped_role_permissions,
)
from base_platform.catalog.loader import CatalogError

DAG_IDS = [
    "argocd_smoke",
    "dataset_erase",
    "dataset_maintenance",
    "dataset_rollback",
    "dataset_sample",
    "dataset_split",
    "pipeline_transactions",
    "platform_deploy",
    "platform_destroy",
    "platform_drift",
    "platform_rollback",
    "platform_validate",
]
ROLE = "roles: {dev: {copy_of: Viewer}}\n"
VIEWER = {
    ("can_read", "DAGs"),
    ("can_access_menu", "DAGs"),
    ("can_read", "DAG Runs"),
    ("can_read", "Task Logs"),
    ("can_read", "Website"),
}


def grants(role: str) -> dict[str, str | None]:
    config = load_roles()
    return {dag_id: config.roles[role].grant_for(dag_id) for dag_id in DAG_IDS}


def test_developer_triggers_platform_and_pipelines_but_only_reads_destroy() -> None:
    assert grants("developer") == {
        "argocd_smoke": None,
        "dataset_erase": "read",  # erasure is the admins'
        "dataset_maintenance": "trigger",
        "dataset_rollback": "trigger",
        "dataset_sample": "trigger",
        "dataset_split": "trigger",
        "pipeline_transactions": "trigger",
        "platform_deploy": "trigger",
        "platform_destroy": "read",
        "platform_drift": "trigger",
        "platform_rollback": "trigger",
        "platform_validate": "trigger",
    }


def test_data_scientist_sees_only_pipelines_samples_and_splits() -> None:
    seen = {dag: grant for dag, grant in grants("data-scientist").items() if grant}
    assert seen == dict.fromkeys(("pipeline_transactions", "dataset_sample", "dataset_split"), "trigger")


def test_dataset_grants_for_the_api_first_rule_decides_and_no_rule_means_none() -> None:
    roles = load_roles().roles
    assert roles["admin"].may_read_dataset("anything")
    assert roles["developer"].may_read_dataset("transactions")
    assert not roles["data-scientist"].may_read_dataset("transactions")
    ruled = Role(dags=(DagRule(match="*", grant="read"),), datasets=(
        DatasetRule(match="secret_*", grant="none"), DatasetRule(match="*", grant="read"),
    ))  # fmt: skip
    assert ruled.may_read_dataset("orders") and not ruled.may_read_dataset("secret_salaries")


def test_admin_copies_fabs_admin_role() -> None:
    assert load_roles().roles["admin"].copy_of == "Admin"


def test_scoped_roles_lose_the_global_dag_grant_and_gain_per_dag_ones() -> None:
    perms = scoped_role_permissions(load_roles().roles["developer"], VIEWER, DAG_IDS)
    assert ("can_read", "DAGs") not in perms  # that would show every DAG
    assert ("can_access_menu", "DAGs") in perms
    assert {("can_read", "DAG:platform_destroy")} == {p for p in perms if p[1].endswith("platform_destroy")}
    assert {
        ("can_read", "DAG:platform_deploy"),
        ("can_edit", "DAG:platform_deploy"),
        ("can_create", "DAG Run:platform_deploy"),
    } <= perms
    assert not any("argocd_smoke" in resource for _, resource in perms)


def test_users_passwords_come_from_the_environment_not_the_file() -> None:
    config = load_roles()
    assert {(u.username, u.role) for u in config.users} == {
        ("admin", "admin"),
        ("ops", "admin"),
        ("dev", "developer"),
        ("ds", "data-scientist"),
        ("breaker", "pipeline-breaker"),
    }
    assert "password:" not in Path("config/roles.yaml").read_text()


def test_approvers_are_the_named_users_and_roles_never_the_requester() -> None:
    from base_platform.auth.roles import approvers

    config = load_roles()
    assert approvers([], ["admin"], config) == ["admin", "ops"]
    assert approvers([], ["admin"], config, exclude="admin") == ["ops"]
    assert approvers(["dev"], [], config, exclude="admin") == ["dev"]
    assert approvers(["admin"], [], config, exclude="admin") == []


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("roles: {dev: {copy_of: Admin, dags: [{match: '*', grant: read}]}}", "roles.dev", "not both"),
        ("roles: {dev: {dags: [{match: '*', grant: write}]}}", "roles.dev.dags[0].grant", "'trigger'"),
        ("roles: {Admin: {copy_of: Admin}}", "(root)", "built-in"),
        ("roles: {ops: {copy_of: Op, release_batches: true}}", "roles.ops", "needs `dags` rules"),
        (
            "roles: {dev: {dags: [{match: '*', grant: read}], release_batches: yes_please}}",
            "roles.dev.release_batches",
            "bool",
        ),
        (
            ROLE + "users: [{username: a, role: ops, email: a@b.c, password_env: A}]",
            "(root)",
            "unknown role 'ops'",
        ),
        (
            ROLE + "users: [{username: a, role: dev, email: a@b.c, password_env: a-b}]",
            "users[0].password_env",
            "pattern",
        ),
    ],
)
def test_a_bad_roles_file_names_the_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as error:
        load_roles(path)
    assert str(error.value).startswith(f"{path}: {key}: ") and message in str(error.value)


def test_only_admins_and_release_batches_roles_may_trigger_pipeline_control() -> None:
    """A `pipeline_*` rule gives at most read on pipeline_control, even one that names it."""
    config = load_roles()
    assert {name: role.grant_for("pipeline_control") for name, role in config.roles.items()} == {
        "admin": None,  # a copy of FAB's Admin: every DAG, without rules
        "developer": "read",
        "data-scientist": "read",
        "pipeline-breaker": "read",
    }
    assert config.roles["data-scientist"].grant_for("pipeline_transactions") == "trigger"
    named = Role(dags=(DagRule(match="pipeline_control", grant="trigger"),))
    assert named.grant_for("pipeline_control") == "read"
    releaser = Role(dags=(DagRule(match="dataset_*", grant="read"),), release_batches=True)
    assert releaser.grant_for("pipeline_control") == "trigger" and releaser.may_release_batches()
    perms = scoped_role_permissions(config.roles["data-scientist"], VIEWER, [*DAG_IDS, "pipeline_control"])
    assert ("can_read", "DAG:pipeline_control") in perms
    assert not {p for p in perms if p[1].endswith("pipeline_control") and p[0] != "can_read"}


def test_who_may_release_a_held_batch_is_decided_by_the_users_role_in_the_file() -> None:
    config = load_roles()
    assert may_release_batches(config, "admin") and may_release_batches(config, "ops")
    for username in ("dev", "ds", "breaker", "dag_test", "", None):
        assert not may_release_batches(config, username), username

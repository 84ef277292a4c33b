"""Roles and per-DAG grants for the FAB auth manager, from config/roles.yaml."""

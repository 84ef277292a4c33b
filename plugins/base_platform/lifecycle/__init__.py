"""Rollback and teardown of the platform's Argo CD Applications."""

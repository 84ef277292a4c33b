"""Thin helpers over hvac, through the hashicorp provider's ``VaultHook``."""

"""Vault API SIMULATOR: ``python -m sandbox.vault --port N [--scenario FILE]``."""

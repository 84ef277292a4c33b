"""Argo CD API SIMULATOR: ``python -m sandbox.argocd --port N --scenario FILE``."""

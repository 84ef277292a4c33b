"""Desired state (catalog, overlay, rendered manifests) against live state (Argo CD)."""

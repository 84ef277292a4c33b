"""Typed loading and checking of config/platform.yaml and the environment overlays."""

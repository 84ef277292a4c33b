"""Data pipelines through the 14 BASE modules: one package each, on the shared spec and run records."""

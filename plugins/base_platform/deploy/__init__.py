"""platform_deploy: the DAG built from the catalog, and what its steps do."""

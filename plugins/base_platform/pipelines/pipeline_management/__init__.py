"""pipeline_management: the engine, the pipeline DAGs, derived pipelines and the breaker."""

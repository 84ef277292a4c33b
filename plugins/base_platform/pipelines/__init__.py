"""Data pipelines through the BASE module stages: specs, the streaming engine and the DAG factory."""

"""quality_monitoring: a run's metrics against the dataset's history."""

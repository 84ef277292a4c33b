"""feature_engineering: feature views over curated datasets, for training (offline) and serving (online).

Feast's model (entities, feature views over a source with an event time, an offline store, an
online store, point-in-time-correct joins), built on DuckDB over the Iceberg datasets: Feast
itself cannot be installed beside Airflow 3.3.2 (see ``docs/features.md``).
"""

"""data_storage: the dataset's Iceberg table, the staging writer and the quarantine."""

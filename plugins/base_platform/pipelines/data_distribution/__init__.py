"""data_distribution: publishing to consumers, and the datasets' read path."""

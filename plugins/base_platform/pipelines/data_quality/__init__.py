"""data_quality: the spec's rules, and key uniqueness across the run and the table."""

"""data_control: time travel, rollback, maintenance, erasure, samples, splits, synthetic rows."""

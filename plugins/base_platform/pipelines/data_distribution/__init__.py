"""data_distribution: publishing to consumers, and the datasets' read path."""

from __future__ import annotations

# The most rows one page of the datasets API holds. Here rather than in ``serving``, so the API's
# parameter models (loaded with the plugin, in every Airflow process) state it without pyarrow.
MAX_LIMIT = 10_000

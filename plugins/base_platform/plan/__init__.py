"""From the catalog and a selection, the ordered graph of deploy steps. No Airflow imports."""

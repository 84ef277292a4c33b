# The production image: Airflow 3.3.2 with the project's pinned dependencies and code.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/base-platform/
RUN pip install --no-cache-dir -r /opt/base-platform/requirements.txt -c /opt/base-platform/constraints.txt

# plugins/ finds include/ and config/ beside it (../include, ../config), as in the repository.
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root config/ /opt/airflow/config/

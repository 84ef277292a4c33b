# The production image: Airflow 3.3.2 with the project's pinned dependencies and code.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/base-platform/
RUN pip install --no-cache-dir -r /opt/base-platform/requirements.txt -c /opt/base-platform/constraints.txt

# Arrow's C++ code allocates from jemalloc, which keeps freed pages for the next batch; its
# default (mimalloc) returns them and the kernel zeroes them again: a pipeline shard spent about
# 5% more CPU and 110 MB more memory that way. An environment variable, because Arrow reads it once.
ENV ARROW_DEFAULT_MEMORY_POOL=jemalloc

# platform_backup runs pg_dump and pg_restore: Airflow's image ships postgresql-client (its
# INSTALL_POSTGRES_CLIENT build argument, on by default), which must be no older than the server.

# plugins/ finds include/ and config/ beside it (../include, ../config), as in the repository.
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root config/ /opt/airflow/config/

"""data_distribution on real parts: a real Postgres (the one the Celery e2e runs), moto's S3
server over HTTP, and the Iceberg tables real pipeline runs commit."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from base_platform.files import Location
from base_platform.pipelines.data_distribution import publishing
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import (
    PostgresTarget,
    S3Target,
    WebhookTarget,
    pipeline_named,
)
from tests.unit.pipelines.test_engine import generate_run, run
from tests.unit.pipelines.test_tables import with_new_column

pytestmark = pytest.mark.integration
TARGET = PostgresTarget(
    target="postgres", name="warehouse", conn_id="consumer_db", table="curated.transactions"
)


@pytest.fixture(scope="module")
def consumer_db() -> Iterator[str]:
    from sqlalchemy.engine import make_url

    from tests.e2e.services import postgres

    with postgres() as url:
        parts = make_url(url)
        yield json.dumps(
            {
                "conn_type": "postgres",
                "host": parts.host,
                "port": parts.port,
                "login": parts.username,
                "password": parts.password,
                "schema": parts.database,
            }
        )


@pytest.fixture
def consumer(consumer_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A cursor on the consumer's database, empty for each test."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    monkeypatch.setenv("AIRFLOW_CONN_CONSUMER_DB", consumer_db)
    conn: Any = PostgresHook(postgres_conn_id="consumer_db").get_conn()
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS curated CASCADE")
        cursor.execute("DROP TABLE IF EXISTS base_publications")
        yield cursor
    conn.close()


def count(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM curated.transactions")
    return int(cursor.fetchone()[0])


def table() -> Any:
    found = tables.load("transactions")
    assert found is not None
    return found


def test_postgres_gets_each_snapshot_once_new_columns_and_never_a_protected_value(
    consumer: Any, iceberg: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_named("transactions")
    generate_run(300, tmp_path / "in1", 1)
    first = run(pipeline, tmp_path / "in1", tmp_path / "out", "run-1")
    assert first.snapshot_id is not None

    published = publishing.publish_postgres(pipeline, table(), first.snapshot_id, TARGET)
    assert (published["published"], published["rows_upserted"], published["whole"]) == (True, 300, True)
    again = publishing.publish_postgres(pipeline, table(), first.snapshot_id, TARGET)
    assert again["published"] is False and count(consumer) == 300

    generate_run(200, tmp_path / "in2", 2)
    second = run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2")
    assert second.snapshot_id is not None
    grown = publishing.publish_postgres(pipeline, table(), second.snapshot_id, TARGET)
    assert (grown["since"], grown["whole"], grown["rows_upserted"]) == (first.snapshot_id, False, 200)
    assert count(consumer) == 500

    # the stored digest went out as it is stored; no raw e-mail or phone is anywhere in the rows
    consumer.execute("SELECT transaction_id, customer_email FROM curated.transactions")
    theirs = {key: bytes(value) for key, value in consumer.fetchall()}
    ours = table().scan(selected_fields=("transaction_id", "customer_email")).to_arrow().to_pylist()
    assert theirs == {r["transaction_id"]: r["customer_email"] for r in ours}
    raw = [
        value
        for path in (tmp_path / "in1").glob("*.csv")
        for row in csv.DictReader(path.open(newline=""))
        for value in (row["customer_email"], row["customer_phone"])
        if value
    ]
    consumer.execute("SELECT string_agg(t::text, '|') FROM curated.transactions t")
    everything = consumer.fetchone()[0]
    assert raw and not [value for value in raw[:200] if value in everything]

    evolved = with_new_column(pipeline, tmp_path / "in3")
    third = run(evolved, tmp_path / "in3", tmp_path / "out", "run-3")
    assert third.snapshot_id is not None
    publishing.publish_postgres(evolved, table(), third.snapshot_id, TARGET)
    consumer.execute("SELECT loyalty_tier, count(*) FROM curated.transactions GROUP BY 1 ORDER BY 1")
    assert consumer.fetchall() == [("gold", 200), (None, 500)]
    consumer.execute("SELECT snapshot_id FROM base_publications")
    assert consumer.fetchall() == [(third.snapshot_id,)]


def test_a_rollback_publishes_the_whole_snapshot_and_the_rows_that_left_go(
    consumer: Any, iceberg: Path, tmp_path: Path
) -> None:
    from base_platform.pipelines.data_control import table_actions

    pipeline = pipeline_named("transactions")
    records = []
    for number in (1, 2):
        generate_run(150, tmp_path / f"in{number}", number)
        records.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}"))
    assert records[0].snapshot_id is not None and records[1].snapshot_id is not None
    publishing.publish_postgres(pipeline, table(), records[1].snapshot_id, TARGET)
    assert count(consumer) == 300
    table_actions.rollback("transactions", records[0].snapshot_id, dry_run=False, who="test", why="bad run 2")
    back = publishing.publish_postgres(pipeline, table(), records[0].snapshot_id, TARGET)
    assert (back["whole"], back["rows_deleted"]) == (True, 150)
    assert count(consumer) == 150


def test_an_s3_export_follows_a_rollback_to_a_snapshot_it_exported_before(
    s3: Any, iceberg: Path, tmp_path: Path
) -> None:
    from base_platform.pipelines.data_control import table_actions

    pipeline = pipeline_named("transactions")
    target = EXPORT.model_copy(update={"uri": "s3://consumers/rolled-back"})
    records = []
    for number in (1, 2):
        generate_run(150, tmp_path / f"in{number}", number)
        records.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}"))
        assert records[-1].snapshot_id is not None
        publishing.export_s3(pipeline, table(), records[-1].snapshot_id, target)
    first = records[0].snapshot_id
    assert first is not None
    table_actions.rollback("transactions", first, dry_run=False, who="test", why="bad run 2")
    back = publishing.export_s3(pipeline, table(), first, target)
    assert back["published"] is True and back["rows"] == 150
    newest = publishing.published_export(Location.of(target.uri))
    assert newest is not None and (newest["snapshot_id"], newest["export"]) == (first, 3)
    assert newest["folder"] == f"snapshot={first}.3" and newest["whole"] is True
    assert newest["since_snapshot_id"] == records[1].snapshot_id
    assert publishing.export_s3(pipeline, table(), first, target)["published"] is False


def test_a_failed_publish_leaves_the_consumer_as_it_was(consumer: Any, iceberg: Path, tmp_path: Path) -> None:
    pipeline = pipeline_named("transactions")
    generate_run(100, tmp_path / "in", 1)
    first = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    assert first.snapshot_id is not None
    publishing.publish_postgres(pipeline, table(), first.snapshot_id, TARGET)
    consumer.execute("ALTER TABLE curated.transactions ADD COLUMN not_in_contract text")
    generate_run(100, tmp_path / "in2", 2)
    second = run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2")
    assert second.snapshot_id is not None
    with pytest.raises(publishing.PublishError, match="not_in_contract"):
        publishing.publish_postgres(pipeline, table(), second.snapshot_id, TARGET)
    assert count(consumer) == 100
    consumer.execute("SELECT snapshot_id FROM base_publications")
    assert consumer.fetchall() == [(first.snapshot_id,)]


EXPORT = S3Target(target="s3", name="partners", uri="s3://consumers/transactions")
EXPORT_SCRIPT = """
import sys
from base_platform.files import Location
from base_platform.pipelines.data_distribution import publishing
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import S3Target, pipeline_named
table = tables.load("transactions")
target = S3Target(target="s3", name="partners", uri="s3://consumers/transactions")
publishing.export_s3(pipeline_named("transactions"), table, int(sys.argv[1]), target)
"""


def objects(s3: Any) -> dict[str, bytes]:
    """The bucket's objects, without the empty ``…/`` markers pyarrow's S3 writes for directories."""
    return {key: s3.get_object(Bucket="consumers", Key=key)["Body"].read() for key in keys(s3)}


def keys(s3: Any) -> list[str]:
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="consumers").get("Contents", [])]
    return [key for key in listed if key[-1] != "/"]


def test_an_export_killed_midway_is_invisible_and_a_rerun_completes_it(
    s3: Any, iceberg: Path, tmp_path: Path
) -> None:
    import hashlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import pyarrow.parquet as pq

    from tests.conftest import ROOT

    pipeline = pipeline_named("transactions")
    for number in range(4):  # 4 runs x 3 files x 5 days: 60 data files to export
        generate_run(600, tmp_path / f"in{number}", number, files=3)
        record = run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}")
    snapshot_id = record.snapshot_id
    assert snapshot_id is not None

    env = os.environ | {"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"}
    exporter = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(snapshot_id)], env=env)
    while not keys(s3):
        assert exporter.poll() is None, "the export ended before it was killed"
        time.sleep(0.005)
    exporter.send_signal(signal.SIGKILL)
    exporter.wait()
    written = objects(s3)
    assert written and not [key for key in written if key.endswith(publishing.EXPORT_MANIFEST)]
    assert publishing.published_export(Location.of(EXPORT.uri)) is None

    done = publishing.export_s3(pipeline, table(), snapshot_id, EXPORT)
    assert done["published"] is True and done["rows"] == 2400
    written = objects(s3)
    manifest = json.loads(written[f"transactions/snapshot={snapshot_id}/{publishing.EXPORT_MANIFEST}"])
    assert len(written) == len(manifest["files"]) + 1  # the rerun started afresh: nothing left over
    for entry in manifest["files"]:
        data = written[f"transactions/snapshot={snapshot_id}/{entry['path']}"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert (
        sum(pq.read_metadata(pa_buffer(written, snapshot_id, e)).num_rows for e in manifest["files"]) == 2400
    )
    assert publishing.export_s3(pipeline, table(), snapshot_id, EXPORT)["published"] is False

    generate_run(300, tmp_path / "more", 9)
    later = run(pipeline, tmp_path / "more", tmp_path / "out", "run-9")
    assert later.snapshot_id is not None
    step = publishing.export_s3(pipeline, table(), later.snapshot_id, EXPORT)
    newest = publishing.published_export(Location.of(EXPORT.uri))
    assert newest is not None and newest["since_snapshot_id"] == snapshot_id
    assert step["rows"] == 2400 + 300  # the changed partitions, whole: every day had a new file


def pa_buffer(written: dict[str, bytes], snapshot_id: int, entry: dict[str, Any]) -> Any:
    import pyarrow as pa

    return pa.BufferReader(written[f"transactions/snapshot={snapshot_id}/{entry['path']}"])


def test_publish_dag_takes_the_commits_snapshot_to_every_target_and_a_failed_one_fails_alone(
    airflow_db: None, consumer: Any, webhook: Any, start_vault: Any, iceberg: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from base_platform.pipelines.data_distribution.dag import build_publish_dag
    from tests.integration.test_data_control import events_of
    from tests.integration.test_pipelines import run as run_pipeline

    start_vault()
    root = tmp_path / "root"
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(root))
    monkeypatch.setenv("BASE_PLATFORM_ARTIFACTS", str(tmp_path / "artifacts"))
    generate_run(500, root / "data/transactions/incoming", 1)
    committed, states = run_pipeline()
    assert committed.state == "success", states
    (extra,) = events_of(committed.run_id)
    assert extra["snapshot_id"] == str(table().current_snapshot().snapshot_id)

    consumer.execute("CREATE SCHEMA curated")
    consumer.execute("CREATE TABLE curated.legacy (transaction_id text PRIMARY KEY, retired text)")
    targets = (
        TARGET,
        S3Target(target="s3", name="exports", uri=str(tmp_path / "exports")),
        WebhookTarget(target="webhook", name="subscribers", http_conn_id="platform_webhook"),
        PostgresTarget(target="postgres", name="legacy", conn_id="consumer_db", table="curated.legacy"),
    )
    pipeline = pipeline_named("transactions")
    spec = pipeline.spec.model_copy(update={"distribution": targets})
    dag = build_publish_dag(pipeline.model_copy(update={"spec": spec}))
    published = dag.test(run_conf={"snapshot_id": extra["snapshot_id"]})
    assert {ti.task_id: ti.state for ti in published.get_task_instances()} == {
        "choose": "success",
        "publish_warehouse": "success",
        "publish_exports": "success",
        "publish_subscribers": "success",
        "publish_legacy": "failed",  # its table has a column the contract lacks
    }
    assert count(consumer) == table().scan().count() == 500
    manifest = Location.of(str(tmp_path / "exports")).read_json(
        f"snapshot={extra['snapshot_id']}", "_manifest.json"
    )
    assert manifest["rows"] == 500
    (message,) = webhook.received
    assert extra["snapshot_id"] in message["title"] and '"rows_stored": 500' in message["text"]

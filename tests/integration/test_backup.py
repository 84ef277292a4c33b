"""Backup and restore of the orchestrator's state, against real Postgres servers, a folder and
moto's S3 (the whole stack's drill is tests/drills/test_restore.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from base_platform.files import Location
from base_platform.lifecycle.backup import (
    BackupError,
    Database,
    Store,
    backup,
    complete_backups,
    newest_metadata,
    prune,
    restore,
    roll_forward,
)
from tests.e2e.services import Postgres, postgres_server

pytestmark = pytest.mark.integration
KEY = Fernet.generate_key().decode()
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def source() -> Iterator[Postgres]:
    with postgres_server() as server:
        run(server.url, "CREATE TABLE dag_run (id int PRIMARY KEY, dag_id text)")
        run(server.url, "INSERT INTO dag_run VALUES (1, 'platform_deploy'), (2, 'pipeline_transactions')")
        yield server


@pytest.fixture
def target() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


def run(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    with engine.begin() as connection:
        result = connection.execute(text(sql))
        rows = list(result) if result.returns_rows else []
    engine.dispose()
    return rows


def databases(server: Postgres) -> list[Database]:
    return [Database("metadata", server.url)]


def test_a_backup_restores_onto_a_new_server(source: Postgres, target: Postgres, tmp_path: Path) -> None:
    store = Store.of(str(tmp_path / "backups"))
    manifest = backup(databases(source), store, KEY, now=T0)
    assert manifest["id"] == "20261129T020000Z" and complete_backups(store) == [manifest["id"]]
    assert KEY not in (tmp_path / "backups" / manifest["id"] / "manifest.json").read_text()
    with pytest.raises(BackupError, match="exists already"):
        backup(databases(source), store, KEY, now=T0)  # never over a complete backup

    restored = restore(store, "latest", [Database("metadata", target.url)], KEY)
    assert restored["id"] == manifest["id"]
    assert run(target.url, "SELECT id, dag_id FROM dag_run ORDER BY id") == [
        (1, "platform_deploy"),
        (2, "pipeline_transactions"),
    ]
    # Again onto the same server: --clean makes it the backup's state, with no duplicate.
    restore(store, manifest["id"], [Database("metadata", target.url)], KEY)
    assert run(target.url, "SELECT count(*) FROM dag_run") == [(2,)]


def test_a_restore_with_another_fernet_key_is_refused_before_touching_anything(
    source: Postgres, target: Postgres, tmp_path: Path
) -> None:
    store = Store.of(str(tmp_path))
    backup(databases(source), store, KEY, now=T0)
    with pytest.raises(BackupError, match="another Fernet key"):
        restore(store, "latest", [Database("metadata", target.url)], Fernet.generate_key().decode())
    assert run(target.url, "SELECT to_regclass('dag_run')") == [(None,)]


def test_a_corrupt_dump_is_refused(source: Postgres, target: Postgres, tmp_path: Path) -> None:
    store = Store.of(str(tmp_path))
    manifest = backup(databases(source), store, KEY, now=T0)
    dump = tmp_path / manifest["databases"]["metadata"]["key"]
    dump.write_bytes(dump.read_bytes()[:-10])
    with pytest.raises(BackupError, match="corrupt"):
        restore(store, "latest", [Database("metadata", target.url)], KEY)
    assert run(target.url, "SELECT to_regclass('dag_run')") == [(None,)]


def test_a_backup_without_its_manifest_is_never_restored_and_pruning_keeps_the_newest(
    source: Postgres, tmp_path: Path
) -> None:
    store = Store.of(str(tmp_path))
    ids = [backup(databases(source), store, KEY, now=T0 + timedelta(days=day))["id"] for day in range(3)]
    incomplete = tmp_path / "20261128T020000Z"
    incomplete.mkdir()
    (incomplete / "metadata.dump").write_bytes(b"half")
    (tmp_path / ids[2] / "manifest.json").unlink()  # the newest never finished
    assert complete_backups(store) == ids[:2]
    with pytest.raises(BackupError, match="no complete backup"):
        restore(store, ids[2], databases(source), KEY)

    assert prune(store, keep=1) == ["20261128T020000Z", ids[0]]
    assert complete_backups(store) == [ids[1]]
    assert (tmp_path / ids[2]).exists()  # newer than the kept one: maybe still being written
    with pytest.raises(BackupError, match="at least 1"):
        prune(store, keep=0)


def test_backups_go_to_s3_through_an_amazon_connection(source: Postgres, s3: Any) -> None:
    store = Store.of("s3://curated/platform-backups")
    manifest = backup(databases(source), store, KEY, now=T0)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="curated")["Contents"]}
    folder = f"platform-backups/{manifest['id']}"
    assert {key for key in listed if not key.endswith("/")} == {
        f"{folder}/metadata.dump",
        f"{folder}/manifest.json",
    }
    backup(databases(source), store, KEY, now=T0 + timedelta(days=1))
    assert prune(store, keep=1) == [manifest["id"]]
    assert len(complete_backups(store)) == 1


def test_a_database_that_is_not_postgres_is_refused() -> None:
    with pytest.raises(BackupError, match="not Postgres"):
        Database("metadata", "sqlite:////tmp/airflow.db").libpq()


def test_roll_forward_points_a_restored_catalog_at_the_last_commit(tmp_path: Path) -> None:
    """The catalog came back from a backup taken before the last commit: its table points at an
    older metadata file than the warehouse holds."""
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("base", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=str(tmp_path / "wh"))
    catalog.create_namespace("base")
    rows = pa.table({"id": pa.array([1, 2], pa.int64())})
    table = catalog.create_table("base.transactions", rows.schema)
    table.append(rows)
    at_backup = catalog.load_table("base.transactions").metadata_location
    table.append(rows)
    last_commit = catalog.load_table("base.transactions").metadata_location
    catalog.drop_table("base.transactions")  # what the restored catalog holds
    catalog.register_table("base.transactions", at_backup)

    assert roll_forward(catalog) == {"base.transactions": last_commit}
    assert catalog.load_table("base.transactions").scan().to_arrow().num_rows == 4
    assert roll_forward(catalog) == {}  # already at the newest


def test_two_newest_metadata_files_of_one_version_are_ambiguous(tmp_path: Path) -> None:
    for name in ("00001-aa.metadata.json", "00002-bb.metadata.json", "00002-cc.metadata.json"):
        (tmp_path / name).write_text(json.dumps({}))
    assert newest_metadata(Location.of(str(tmp_path))) is None
    (tmp_path / "00003-dd.metadata.json").write_text("{}")
    assert newest_metadata(Location.of(str(tmp_path))) == str(tmp_path / "00003-dd.metadata.json")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "extra.location must name"),
        ({"location": "s3://backups/base", "keep": 0}, "extra.keep must be"),
        ({"location": "s3://backups/base", "keep": "14"}, "extra.keep must be"),
    ],
)
def test_platform_backup_refuses_a_connection_without_a_usable_location_or_keep(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], message: str
) -> None:
    from base_platform.lifecycle.backup_dag import backup_target

    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_BACKUP", json.dumps({"conn_type": "aws", "extra": extra}))
    with pytest.raises(ValueError, match=message):
        backup_target()


def test_platform_backup_reads_its_location_and_keep_from_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from base_platform.lifecycle.backup_dag import DEFAULT_KEEP, backup_target

    extra = {"location": "s3://backups/base"}
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_BACKUP", json.dumps({"conn_type": "aws", "extra": extra}))
    assert backup_target() == ("s3://backups/base", DEFAULT_KEEP)

"""Back up and restore the orchestrator's state: Airflow's metadata database (run history,
connections, variables, roles) and the Iceberg catalog's, each a ``pg_dump`` custom archive.

Connections and variables stay encrypted with the Fernet key inside the dump; the key is never
written beside it. The manifest holds only the key's fingerprint, so a restore with another key
is refused before it touches anything (every secret would be unreadable). The manifest is
uploaded last: a backup without one is incomplete, never listed and never restored.

Data files are not copied: they are immutable in the warehouse (object storage). After a
restore, :func:`roll_forward` points each table at its newest committed metadata file, so the
datasets lose nothing committed after the backup (their RPO is the last commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from base_platform.files import Location

BACKUP_MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z$")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Database:
    """One database to dump: its role in the backup and its SQLAlchemy URL (Postgres)."""

    name: str
    url: str

    def libpq(self) -> tuple[list[str], dict[str, str]]:
        """``pg_dump``/``pg_restore`` connection arguments, and the password as PGPASSWORD (never argv)."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.url)
        except ArgumentError as exc:
            raise BackupError(f"{self.name}: not a database URL ({exc})") from exc
        if not url.drivername.startswith("postgresql"):
            raise BackupError(
                f"{self.name}: {url.drivername} is not Postgres; backups need the production topology"
            )
        args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
        return [*args, "-d", url.database or self.name], {"PGPASSWORD": url.password or ""}


@dataclass(frozen=True)
class Store:
    """Where backups live: any :class:`~base_platform.files.Location` (a folder, or an S3 prefix
    through an amazon connection)."""

    location: Location

    @classmethod
    def of(cls, uri: str, conn_id: str | None = None) -> Store:
        if "://" in uri and not uri.startswith(("s3://", "file://")):
            raise BackupError(f"backup location {uri!r}: use s3://bucket/prefix or a folder")
        return cls(Location.of(uri, conn_id))

    def put(self, local: Path, key: str) -> None:
        """Copy beside the target, then rename: a reader never sees half a file."""
        import pyarrow.fs as pafs

        final = self.location.path(key)
        folder, name = final.rsplit("/", 1)
        self.location.fs.create_dir(folder, recursive=True)
        staging = f"{folder}/.{name}.partial"
        pafs.copy_files(str(local), staging, destination_filesystem=self.location.fs)
        self.location.fs.move(staging, final)

    def get(self, key: str, local: Path) -> None:
        import pyarrow.fs as pafs

        pafs.copy_files(self.location.path(key), str(local), source_filesystem=self.location.fs)

    def files(self) -> list[str]:
        import pyarrow.fs as pafs

        if not self.location.exists():
            return []
        found = self.location.fs.get_file_info(pafs.FileSelector(self.location.base, recursive=True))
        start = len(self.location.base) + 1
        return sorted(f.path[start:] for f in found if f.type == pafs.FileType.File and "/." not in f.path)

    def delete(self, backup_ids: Sequence[str]) -> None:
        for backup_id in backup_ids:
            self.location.delete_dir(backup_id)


def fernet_key_id(key: str) -> str:
    """A fingerprint that tells keys apart and reveals nothing of the key."""
    primary = key.split(",")[0].strip()  # the key Airflow encrypts with; the rest only decrypt
    return hashlib.sha256(b"base-platform-backup:" + primary.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _run(command: list[str], database: Database, env: dict[str, str]) -> None:
    # A fixed argv (pg_dump or pg_restore and our own arguments), no shell.
    done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(f"{command[0]} of {database.name} failed: {done.stderr.strip()[-2000:]}")


def backup(
    databases: Sequence[Database], store: Store, key: str, now: datetime | None = None
) -> dict[str, Any]:
    """Dump each database, upload the dumps, then the manifest; the manifest."""
    started = time.monotonic()
    taken = (now or datetime.now(UTC)).replace(microsecond=0)
    backup_id = taken.strftime("%Y%m%dT%H%M%SZ")
    if backup_id in complete_backups(store):
        raise BackupError(f"a backup {backup_id} exists already; one a second at most")
    files: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="base-backup-") as tmp:
        for database in databases:
            args, env = database.libpq()
            dump = Path(tmp) / f"{database.name}.dump"
            _run(
                ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", *args, "-f", str(dump)],
                database,
                env,
            )
            stored = f"{backup_id}/{dump.name}"
            store.put(dump, stored)
            files[database.name] = {"key": stored, "sha256": _sha256(dump), "bytes": dump.stat().st_size}
        manifest = {
            "id": backup_id,
            "taken_at": taken.isoformat(),
            "databases": files,
            "fernet_key_id": fernet_key_id(key),
            "seconds": round(time.monotonic() - started, 2),
        }
        path = Path(tmp) / BACKUP_MANIFEST
        path.write_text(json.dumps(manifest, indent=2))
        store.put(path, f"{backup_id}/{BACKUP_MANIFEST}")
    return manifest


def complete_backups(store: Store) -> list[str]:
    """The ids of backups whose manifest was written, oldest first."""
    return sorted(
        key.split("/")[0]
        for key in store.files()
        if key.endswith(f"/{BACKUP_MANIFEST}") and BACKUP_ID.match(key.split("/")[0])
    )


def manifest_of(store: Store, backup_id: str) -> dict[str, Any]:
    chosen = complete_backups(store)
    if backup_id == "latest":
        if not chosen:
            raise BackupError("no complete backup at this location")
        backup_id = chosen[-1]
    if backup_id not in chosen:
        raise BackupError(
            f"no complete backup {backup_id!r} here; complete ones: {', '.join(chosen) or 'none'}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        store.get(f"{backup_id}/{BACKUP_MANIFEST}", Path(tmp) / BACKUP_MANIFEST)
        manifest: dict[str, Any] = json.loads((Path(tmp) / BACKUP_MANIFEST).read_text())
    return manifest


def restore(store: Store, backup_id: str, databases: Sequence[Database], key: str) -> dict[str, Any]:
    """Restore each database from a backup (``latest`` or an id), after checking the key and files."""
    started = time.monotonic()
    manifest = manifest_of(store, backup_id)
    if manifest["fernet_key_id"] != fernet_key_id(key):
        raise BackupError(
            f"backup {manifest['id']} was taken with another Fernet key: restore with that key "
            "(from the secret store), or every connection and variable would be unreadable"
        )
    missing = [d.name for d in databases if d.name not in manifest["databases"]]
    if missing:
        raise BackupError(f"backup {manifest['id']} holds no dump of {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="base-restore-") as tmp:
        for database in databases:
            entry = manifest["databases"][database.name]
            dump = Path(tmp) / f"{database.name}.dump"
            store.get(entry["key"], dump)
            if _sha256(dump) != entry["sha256"]:
                raise BackupError(f"backup {manifest['id']}: {entry['key']} is corrupt (checksum differs)")
        for database in databases:
            create_database(database)
            args, env = database.libpq()
            dump = Path(tmp) / f"{database.name}.dump"
            restore_args = ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction"]
            _run(["pg_restore", *restore_args, *args, str(dump)], database, env)
    return {
        "id": manifest["id"],
        "taken_at": manifest["taken_at"],
        "seconds": round(time.monotonic() - started, 2),
    }


def create_database(database: Database) -> None:
    """Create the target database on a new server where it does not exist yet."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database.url)
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if found.first() is None:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        engine.dispose()


def prune(store: Store, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete backups, and incomplete ones older than those."""
    if keep < 1:
        raise BackupError("keep must be at least 1: pruning every backup would leave nothing to restore")
    kept = complete_backups(store)[-keep:]
    every = {key.split("/")[0] for key in store.files() if BACKUP_ID.match(key.split("/")[0])}
    doomed = sorted(backup_id for backup_id in every if kept and backup_id < kept[0])
    store.delete(doomed)
    return doomed


def roll_forward(catalog: Any) -> dict[str, str]:
    """Point each table of a restored catalog at its newest metadata file in the warehouse; the
    tables moved and their new metadata. A commit after the backup wrote that file before it moved
    the catalog's pointer, so nothing committed is lost; two newest files of one version (a commit
    that lost a race) are ambiguous, and that table is left where the backup had it."""
    from base_platform.pipelines.data_storage.tables import NAMESPACE

    moved = {}
    for identifier in catalog.list_tables(NAMESPACE):
        table = catalog.load_table(identifier)
        newest = newest_metadata(Location.of(table.metadata_location.rsplit("/", 1)[0]))
        if newest is None or newest == table.metadata_location:
            continue
        if _version(newest) <= _version(table.metadata_location):
            continue
        catalog.drop_table(identifier)  # the catalog's row only; no file is touched
        catalog.register_table(identifier, newest)
        moved[".".join(identifier)] = newest
    return moved


METADATA_FILE = re.compile(r"^(\d+)-[0-9a-f-]+\.metadata\.json$")


def _version(metadata_location: str) -> int:
    match = METADATA_FILE.match(metadata_location.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else -1


def newest_metadata(folder: Location) -> str | None:
    """The one metadata file of the highest version in a table's metadata folder, if unambiguous."""
    import pyarrow.fs as pafs

    names = [
        info.path.rsplit("/", 1)[-1]
        for info in folder.fs.get_file_info(pafs.FileSelector(folder.base))
        if METADATA_FILE.match(info.path.rsplit("/", 1)[-1])
    ]
    if not names:
        return None
    top = max(_version(name) for name in names)
    newest = [name for name in names if _version(name) == top]
    return folder.uri(newest[0]) if len(newest) == 1 else None


METADATA_CONN_ID = "airflow_db"  # Airflow's own database, as a connection (Airflow's usual id)


def orchestrator_databases() -> list[Database]:
    """Airflow's metadata database and, where it is a Postgres database, the Iceberg catalog's
    (``iceberg_default``).

    A task reaches the metadata database only through the ``airflow_db`` connection: Airflow 3
    hides ``sql_alchemy_conn`` from task processes. Outside a task (``platformctl``), Airflow's
    configuration names it.
    """
    from airflow.configuration import conf
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from base_platform.pipelines.data_storage.tables import catalog_uri

    try:
        metadata = PostgresHook(postgres_conn_id=METADATA_CONN_ID).get_uri()
    except AirflowNotFoundException:
        metadata = conf.get("database", "sql_alchemy_conn")
    databases = [Database("metadata", metadata)]
    try:
        iceberg = catalog_uri()
    except AirflowNotFoundException:
        return databases
    return [*databases, Database("iceberg", iceberg)] if iceberg.startswith("postgresql") else databases


def fernet_key() -> str:
    """The key Airflow encrypts connections and variables with; a backup without one would hold
    secrets no restore could read, so none is taken."""
    from airflow.configuration import conf

    key = conf.get("core", "fernet_key", fallback="")
    if not key:
        raise BackupError("no [core] fernet_key: connections and variables are stored unencrypted")
    return str(key)

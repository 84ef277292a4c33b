"""The online store: each entity's latest features, for a model serving one request at a time.

The Airflow connection ``features_online`` says where: conn type ``redis`` (the production
stack's Redis; one hash per view, entity -> JSON) or ``sqlite`` (host: the file, under the
pipelines root; ``make run``). Without the connection, SQLite at ``features/online.db``.
A publish replaces the whole view at once (Redis: a new hash renamed over the old one; SQLite:
one transaction), so a reader sees the previous run's values or this one's, never a mix, and an
entity that left the longest window is gone. A lookup of 100 entities is one round trip.
An entity that is a pseudonym (an HMAC column) is kept as hex, as the datasets API shows it;
``dataset_erase`` deletes its entries and leaves no copy in the store's files (SQLite's
``secure_delete``, a rewrite of Redis's AOF).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from base_platform.files import resolve

if TYPE_CHECKING:
    import pyarrow as pa

CONN_ID = "features_online"
DEFAULT_SQLITE = "features/online.db"
KEY_PREFIX = "base:features:"
AOF_REWRITE_SECONDS = 300  # how long an erasure waits for Redis to rewrite its AOF without the entries


class OnlineStore(Protocol):
    def replace(self, view: str, rows: Iterable[tuple[str, str]], meta: dict[str, str]) -> None: ...

    def lookup(self, view: str, entities: list[str]) -> list[str | None]: ...

    def meta(self, view: str) -> dict[str, str]: ...

    def delete(self, view: str, entities: list[str]) -> int: ...


def entity_text(value: Any) -> str:
    """How an entity is keyed: a pseudonym's digest as hex, anything else as text."""
    return value.hex() if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def encoded(rows: pa.Table, entity: str) -> Iterator[tuple[str, str]]:
    """(entity, its features as JSON) per row; decimals as text, so no cent is lost."""
    names = [name for name in rows.column_names if name != entity]
    for row in rows.to_pylist():
        yield (
            entity_text(row[entity]),
            json.dumps({name: _plain(row[name]) for name in names}, separators=(",", ":")),
        )


class RedisOnlineStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # a redis.Redis

    def replace(self, view: str, rows: Iterable[tuple[str, str]], meta: dict[str, str]) -> None:
        key, staging = KEY_PREFIX + view, f"{KEY_PREFIX}{view}:staging"
        self.client.delete(staging)
        batch: dict[str, str] = {}
        for entity, value in rows:
            batch[entity] = value
            if len(batch) == 10_000:
                self.client.hset(staging, mapping=batch)
                batch = {}
        if batch:
            self.client.hset(staging, mapping=batch)
        with self.client.pipeline(transaction=True) as pipe:
            if batch or self.client.exists(staging):
                pipe.rename(staging, key)
            else:
                pipe.delete(key)
            pipe.delete(f"{key}:meta")
            pipe.hset(f"{key}:meta", mapping=meta)
            pipe.execute()

    def lookup(self, view: str, entities: list[str]) -> list[str | None]:
        if not entities:
            return []
        found = self.client.hmget(KEY_PREFIX + view, entities)
        return [value.decode() if value is not None else None for value in found]

    def meta(self, view: str) -> dict[str, str]:
        found = self.client.hgetall(f"{KEY_PREFIX}{view}:meta")
        return {k.decode(): v.decode() for k, v in found.items()}

    def delete(self, view: str, entities: list[str]) -> int:
        """Delete the entities' entries (and from a publish's staging hash), and rewrite the AOF
        so no earlier write keeps them: whenever there are entities, so a retry after a failed
        rewrite, which finds nothing left to delete, still rewrites."""
        if not entities:
            return 0
        removed = int(self.client.hdel(KEY_PREFIX + view, *entities))
        self.client.hdel(f"{KEY_PREFIX}{view}:staging", *entities)
        if self._appends():
            self._rewrite_aof()
        return removed

    def _appends(self) -> bool:
        """Whether the Redis keeps an AOF; a managed Redis that refuses CONFIG is taken to (a
        rewrite it refuses too fails the erasure, which says so, rather than pass unsure)."""
        import redis

        try:
            return bool(self.client.config_get("appendonly").get("appendonly") == "yes")
        except redis.ResponseError:
            return True

    def _rewrite_aof(self) -> None:
        """Start an AOF rewrite after the deletes and wait until one that began after them ends."""
        before = int(self.client.info("persistence")["aof_rewrites"])  # completed rewrites
        self.client.bgrewriteaof()  # queued behind a rewrite already running
        deadline = time.monotonic() + AOF_REWRITE_SECONDS
        while True:
            found = self.client.info("persistence")
            rewrites = int(found["aof_rewrites"])
            done = not found["aof_rewrite_in_progress"] and not found["aof_rewrite_scheduled"]
            if done and rewrites > before:
                if found["aof_last_bgrewrite_status"] != "ok":
                    raise RuntimeError("Redis failed to rewrite its AOF without the erased entries")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis did not rewrite its AOF within {AOF_REWRITE_SECONDS} s")
            time.sleep(0.2)


class SqliteOnlineStore:
    def __init__(self, path: str) -> None:
        self.path = Path(resolve(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.execute("PRAGMA secure_delete = ON")  # a deleted entry's bytes are zeroed, not left
        connection.execute(
            "CREATE TABLE IF NOT EXISTS features"
            " (view TEXT, entity TEXT, value TEXT, PRIMARY KEY (view, entity))"
        )
        connection.execute("CREATE TABLE IF NOT EXISTS meta (view TEXT PRIMARY KEY, value TEXT)")
        return connection

    def replace(self, view: str, rows: Iterable[tuple[str, str]], meta: dict[str, str]) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute("DELETE FROM features WHERE view = ?", (view,))
            connection.executemany(
                "INSERT INTO features VALUES (?, ?, ?)", ((view, entity, value) for entity, value in rows)
            )
            connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (view, json.dumps(meta)))

    def lookup(self, view: str, entities: list[str]) -> list[str | None]:
        if not entities:
            return []
        marks = ", ".join("?" for _ in entities)
        with closing(self._connect()) as connection:
            found = dict(
                connection.execute(
                    f"SELECT entity, value FROM features WHERE view = ? AND entity IN ({marks})",  # noqa: S608 - placeholders
                    (view, *entities),
                ).fetchall()
            )
        return [found.get(entity) for entity in entities]

    def meta(self, view: str) -> dict[str, str]:
        with closing(self._connect()) as connection:
            found = connection.execute("SELECT value FROM meta WHERE view = ?", (view,)).fetchone()
        return json.loads(found[0]) if found else {}

    def delete(self, view: str, entities: list[str]) -> int:
        with closing(self._connect()) as connection, connection:
            return sum(
                connection.execute("DELETE FROM features WHERE view = ? AND entity = ?", (view, e)).rowcount
                for e in entities
            )


def store() -> OnlineStore:
    """The store ``features_online`` names (SQLite under the pipelines root without it)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(CONN_ID)
    except AirflowNotFoundException:
        return SqliteOnlineStore(DEFAULT_SQLITE)
    if conn.conn_type == "redis":
        import redis

        client = redis.Redis(
            host=conn.host or "127.0.0.1",
            port=conn.port or 6379,
            password=conn.password,
            db=int(conn.schema or 0),
        )
        return RedisOnlineStore(client)
    if conn.conn_type == "sqlite":
        return SqliteOnlineStore(conn.host or DEFAULT_SQLITE)
    raise ValueError(f"connection {CONN_ID}: conn_type {conn.conn_type!r}, expected redis or sqlite")


def publish(
    view: str, rows: pa.Table, entity: str, meta: dict[str, str], into: OnlineStore | None = None
) -> int:
    """Replace the view's online values with ``rows`` (one per entity); returns how many."""
    (into or store()).replace(view, encoded(rows, entity), meta)
    return int(rows.num_rows)


def get_online_features(view: str, entities: list[str], into: OnlineStore | None = None) -> dict[str, Any]:
    """Each asked entity's latest features (None for one the store does not hold), and what they
    were computed from."""
    chosen = into or store()
    found = chosen.lookup(view, entities)
    return {
        "view": view,
        **chosen.meta(view),
        "entities": {
            entity: json.loads(value) if value else None
            for entity, value in zip(entities, found, strict=True)
        },
    }

"""data_distribution's read path: a dataset's rows for the API, pruned, paged and cached.

A query names columns, filters and a point in time; :func:`page` turns the filters into an
Iceberg expression, so the scan skips the partitions and files whose bounds cannot match before
it opens any (``files_scanned`` against ``files_total`` shows it). Paging walks the scan's files
in path order with a cursor that pins the snapshot, so every page of one query reads the same
data even while runs commit. Results are cached by (snapshot, normalised query): a new snapshot
is a new key, so nothing is ever stale. A snapshot that leaves the table (an erasure's expiry, a
rollback, maintenance) takes its pages with it: a read that finds the table's snapshots changed
drops them, and ``dataset_erase`` drops them from the shared store at once
(:func:`forget_erased`), so no erased row stays in a cache. The cache is bounded in bytes: an LRU
in the process under ``make run``, a Redis of its own in production (``BASE_DATASETS_CACHE_URL``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from base_platform.pipelines.data_control.table_actions import dataset_table, parse_point, snapshot_at

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

    from base_platform.pipelines.data_control.erasure import ErasedSubject
    from base_platform.pipelines.spec import Pipeline

MAX_LIMIT = 10_000
FILTER = re.compile(r"^(?P<column>[a-z][a-z0-9_]*)\s*(?P<op><=|>=|=|<|>|\s+in\s+)\s*(?P<value>.*)$")
CACHE_BYTES = 256 << 20  # the in-process store's bound, per api-server process
CACHE_PREFIX = "base:page:"
log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A query the dataset cannot answer: an unknown column, a bad filter, value or cursor (a 400)."""


@dataclass(frozen=True)
class Query:
    """What a caller asks of a dataset, normalised: the same question is the same cache key."""

    dataset: str
    columns: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    as_of: str | None = None
    limit: int = 1000
    cursor: str | None = None

    def key(self) -> str:
        """The query without its cursor: a cursor belongs to exactly one query."""
        text = json.dumps([self.dataset, sorted(self.columns), sorted(self.filters), self.as_of, self.limit])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Page:
    rows: pa.Table
    snapshot_id: int
    next_cursor: str | None
    files_planned: int  # the files whose partition and bounds may match: pruning is total - planned
    files_scanned: int  # of those, the files this page opened
    files_total: int


def parse_filter(pipeline: Pipeline, text: str) -> BooleanExpression:
    """``column op value`` (op: ``=``, ``<``, ``>``, ``<=``, ``>=``, or ``in`` with a comma list),
    typed by the contract; a range is two filters."""
    from pyiceberg.expressions import EqualTo, GreaterThan, GreaterThanOrEqual, In, LessThan, LessThanOrEqual

    found = FILTER.match(text.strip())
    if not found:
        raise QueryError(f"filter {text!r}: write <column><op><value>, op one of = < > <= >= in")
    column, op, raw = found["column"], found["op"].strip(), found["value"]
    if column not in pipeline.contract.names:
        raise QueryError(f"filter {text!r}: no column {column!r} in {pipeline.spec.name}")
    protection = pipeline.spec.security.columns.get(column)
    if protection is not None and protection.protect != "none":
        raise QueryError(f"filter {text!r}: {column} is stored as {protection.protect}, not filterable")
    # pyiceberg's predicates take (term, value) at run time; its pydantic typing names them otherwise
    predicates: dict[str, Any] = {
        "=": EqualTo,
        "<": LessThan,
        ">": GreaterThan,
        "<=": LessThanOrEqual,
        ">=": GreaterThanOrEqual,
        "in": In,
    }
    if op == "in":
        value: Any = {_typed(pipeline, column, v.strip()) for v in raw.split(",") if v.strip()}
    else:
        value = _typed(pipeline, column, raw)
    return cast("BooleanExpression", predicates[op](column, value))


NUMBERS: dict[str, Any] = {"int64": int, "float64": float}


def _typed(pipeline: Pipeline, column: str, raw: str) -> Any:
    spec = pipeline.contract.column(column)
    try:
        if spec.decimal:
            return Decimal(raw)
        if spec.type in NUMBERS:
            return NUMBERS[spec.type](raw)
        if spec.type == "bool":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if spec.type == "date":
            return date.fromisoformat(raw).isoformat()
        if spec.type == "timestamp":
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if when.tzinfo is None:
                raise QueryError(f"{column}: {raw!r} has no time zone: add Z or +hh:mm")
            return when.isoformat()
    except (ValueError, InvalidOperation) as exc:
        if isinstance(exc, QueryError):
            raise
        raise QueryError(f"{column}: {raw!r} is not a {spec.type}") from exc
    return raw


def _cursor(snapshot_id: int, file_index: int, offset: int, query: Query) -> str:
    text = json.dumps({"s": snapshot_id, "f": file_index, "o": offset, "q": query.key()})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _position(query: Query) -> tuple[int | None, int, int]:
    """The cursor's snapshot, file index and row offset (none: the first page)."""
    if not query.cursor:
        return None, 0, 0
    try:
        padded = query.cursor + "=" * (-len(query.cursor) % 4)
        found = json.loads(base64.urlsafe_b64decode(padded))
        position = int(found["s"]), int(found["f"]), int(found["o"])
        same = found["q"] == query.key()
    except (ValueError, KeyError, TypeError) as exc:
        raise QueryError("cursor: not one this API gave") from exc
    if not same:
        raise QueryError("cursor: it belongs to another query (columns, filters, as_of and limit must stay)")
    return position


def check(pipeline: Pipeline, query: Query) -> None:
    """Refuse what no snapshot could answer, before any table is read."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit: 1 to {MAX_LIMIT}")
    unknown = [c for c in query.columns if c not in pipeline.contract.names]
    if unknown:
        raise QueryError(f"columns: {', '.join(unknown)} not in {pipeline.spec.name}")
    for text in query.filters:
        parse_filter(pipeline, text)
    _position(query)


def _snapshot(table: Table, query: Query) -> Snapshot:
    """The snapshot a query reads: the one its cursor pins, else its as_of, else the current one."""
    pinned, _, _ = _position(query)
    if pinned is not None:
        snapshot = table.snapshot_by_id(pinned)
        if snapshot is None:
            raise QueryError(f"cursor: snapshot {pinned} expired; start again")
        return snapshot
    found = snapshot_at(table, parse_point(query.as_of)) if query.as_of else table.current_snapshot()
    if found is None:
        raise QueryError(f"{'.'.join(table.name())}: no snapshot yet")
    return found


def page(pipeline: Pipeline, query: Query) -> Page:
    """One page of the query's rows (uncached)."""
    check(pipeline, query)
    table = dataset_table(pipeline.spec.name)
    return _page(pipeline, query, table, _snapshot(table, query))


def _page(pipeline: Pipeline, query: Query, table: Table, snapshot: Snapshot) -> Page:
    import pyarrow as pa
    from pyiceberg.expressions import AlwaysTrue, And
    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow

    _, file_index, offset = _position(query)
    expression: BooleanExpression = AlwaysTrue()
    for text in query.filters:
        expression = And(expression, parse_filter(pipeline, text))
    scan = table.scan(
        row_filter=expression, selected_fields=query.columns or ("*",), snapshot_id=snapshot.snapshot_id
    )
    tasks = sorted(scan.plan_files(), key=lambda task: task.file.file_path)
    parts: list[pa.Table] = []
    wanted, scanned = query.limit, 0
    while file_index < len(tasks) and wanted > 0:
        # read no further into the file than this page needs, and one row more: is there a rest?
        reader = ArrowScan(table.metadata, table.io, scan.projection(), expression, limit=offset + wanted + 1)
        rows = reader.to_table([tasks[file_index]]).slice(offset)
        scanned += 1
        parts.append(rows.slice(0, wanted))
        if rows.num_rows > wanted:
            offset += wanted
            wanted = 0
            break
        wanted -= rows.num_rows
        file_index, offset = file_index + 1, 0
    more = file_index < len(tasks)
    rows = (
        pa.concat_tables(parts, promote_options="permissive")
        if parts
        else schema_to_pyarrow(scan.projection()).empty_table()
    )
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    return Page(
        rows=rows,
        snapshot_id=snapshot.snapshot_id,
        next_cursor=_cursor(snapshot.snapshot_id, file_index, offset, query) if more else None,
        files_planned=len(tasks),
        files_scanned=scanned,
        files_total=int(summary.get("total-data-files", len(tasks))),
    )


class MemoryPageStore:
    """Pages in this process, least recently used out first, bounded in bytes (``make run``)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        from cachetools import LRUCache

        self._pages: LRUCache[str, Page] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda page: max(1, page.rows.nbytes)
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> Page | None:
        with self._lock:
            return self._pages.get(key)

    def put(self, key: str, page: Page) -> None:
        with self._lock, contextlib.suppress(ValueError):  # a page bigger than the cache: not kept
            self._pages[key] = page

    def page_keys(self) -> list[str]:
        with self._lock:
            return list(self._pages.keys())

    def forget(self, dataset: str, live: frozenset[int]) -> int:
        """Drop the dataset's pages of snapshots not in ``live``; returns how many."""
        with self._lock:
            gone = [key for key in self._pages if _expired(key, dataset, live)]
            for key in gone:
                del self._pages[key]
        return len(gone)


class RedisPageStore:
    """Pages in Redis, shared by every api-server process (production). The Redis is the cache's
    own, bounded by its ``maxmemory`` with ``allkeys-lru`` (never the Celery broker's, whose
    queues must not be evicted); a page bigger than ``max_page_bytes`` is not kept, and each
    lives at most ``ttl_seconds``."""

    def __init__(self, url: str, max_page_bytes: int = 32 << 20, ttl_seconds: int = 86_400) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._max, self._ttl = max_page_bytes, ttl_seconds

    def get(self, key: str) -> Page | None:
        import pyarrow as pa
        import redis

        try:
            found = self._redis.get(CACHE_PREFIX + key)
        except redis.RedisError as exc:  # the cache is down: answer without it
            log.warning("page cache unavailable: %s", exc)
            return None
        if found is None:
            return None
        with pa.ipc.open_stream(cast(bytes, found)) as reader:
            rows = reader.read_all()
        facts = json.loads((rows.schema.metadata or {})[b"base.page"])
        return Page(rows=rows.replace_schema_metadata(None), **facts)

    def put(self, key: str, page: Page) -> None:
        import redis

        facts = {k: v for k, v in page.__dict__.items() if k != "rows"}
        data = to_ipc(page.rows.replace_schema_metadata({"base.page": json.dumps(facts)}))
        if len(data) > self._max:
            return
        try:
            self._redis.set(CACHE_PREFIX + key, data, ex=self._ttl)
        except redis.RedisError as exc:
            log.warning("page cache unavailable: %s", exc)

    def forget(self, dataset: str, live: frozenset[int]) -> int:
        """Drop the dataset's pages of snapshots not in ``live``; returns how many. A Redis that
        cannot be reached raises (``redis.RedisError``): an erasure must not pass over it."""
        matching = self._redis.scan_iter(f"{CACHE_PREFIX}{dataset}:*", count=1000)
        gone = [key for key in matching if _expired(key.decode().removeprefix(CACHE_PREFIX), dataset, live)]
        for start in range(0, len(gone), 1000):
            self._redis.delete(*gone[start : start + 1000])
        return len(gone)


def _page_key(dataset: str, snapshot_id: int, query: Query) -> str:
    return f"{dataset}:{snapshot_id}:{query.key()}:{query.cursor or ''}"


def _expired(key: str, dataset: str, live: frozenset[int]) -> bool:
    """Whether a page key is the dataset's, of a snapshot the table no longer has."""
    name, snapshot_id, _ = key.split(":", 2)
    return name == dataset and int(snapshot_id) not in live


def live_snapshots(table: Table) -> frozenset[int]:
    return frozenset(snapshot.snapshot_id for snapshot in table.snapshots())


class PageCache:
    """Pages by (snapshot, query, cursor) in a store: a new snapshot is a new key, so a page is
    never stale, only unused. A snapshot gone from the table (expired, erased) takes its pages
    along at the next read. A store that fails (Redis down) costs the cache, not the answer."""

    def __init__(self, store: MemoryPageStore | RedisPageStore | None = None) -> None:
        self.store = store or MemoryPageStore()
        self._live: dict[str, frozenset[int]] = {}  # each dataset's snapshots at the last read

    def get(self, pipeline: Pipeline, query: Query) -> Page:
        """The page, from the cache while the snapshot it reads is the same."""
        check(pipeline, query)
        table = dataset_table(pipeline.spec.name)
        snapshot = _snapshot(table, query)
        self._forget_gone(pipeline.spec.name, live_snapshots(table))
        key = _page_key(pipeline.spec.name, snapshot.snapshot_id, query)
        found = self.store.get(key)
        if found is None:
            found = _page(pipeline, query, table, snapshot)
            self.store.put(key, found)
            # an erasure that expired the snapshot while it was read dropped its pages before this one
            refreshed = table.refresh()
            if refreshed.snapshot_by_id(snapshot.snapshot_id) is None:
                self._forget_gone(pipeline.spec.name, live_snapshots(refreshed))
        return found

    def _forget_gone(self, dataset: str, live: frozenset[int]) -> None:
        """Drop the pages of snapshots the table lost since this process last read it."""
        import redis

        if self._live.get(dataset) == live:
            return
        try:
            self.store.forget(dataset, live)
        except redis.RedisError as exc:  # the cache is down: the next read tries again
            log.warning("page cache unavailable: %s", exc)
            return
        self._live[dataset] = live


def forget_erased(subject: ErasedSubject) -> dict[str, int]:
    """``dataset_erase``'s follower: drop at once the shared store's pages of every snapshot the
    erasure expired, in each dataset it touched (a process's own LRU drops them at its next read)."""
    from base_platform.pipelines.data_storage import tables

    url = os.environ.get("BASE_DATASETS_CACHE_URL")
    if not url:
        return {}
    store = RedisPageStore(url)
    dropped = {}
    for name in subject.tables:
        table = tables.load(name)
        if table is not None:
            dropped[name] = store.forget(name, live_snapshots(table.refresh()))
    return dropped


def page_cache_from_env() -> PageCache:
    """Redis when ``BASE_DATASETS_CACHE_URL`` names one (production), else this process's LRU."""
    url = os.environ.get("BASE_DATASETS_CACHE_URL")
    return PageCache(RedisPageStore(url) if url else MemoryPageStore())


def to_ipc(rows: pa.Table) -> bytes:
    """Rows as one Arrow IPC stream: what the API sends for Arrow, and what Redis keeps."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return bytes(sink.getvalue().to_pybytes())


def to_json_rows(rows: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON: digests as hex, decimals as strings, times as ISO 8601."""

    def plain(value: Any) -> Any:
        if isinstance(value, list):  # a multi-value HMAC column: each digest as hex
            return [plain(item) for item in value]
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, date | datetime):
            return value.isoformat()
        return value

    return [{k: plain(v) for k, v in row.items()} for row in rows.to_pylist()]

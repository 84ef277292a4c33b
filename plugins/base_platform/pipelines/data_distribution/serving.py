"""data_distribution's read path: a dataset's rows for the API, pruned, paged and cached.

A query names columns, filters and a point in time; :func:`page` turns the filters into an Iceberg
expression, so the scan skips the partitions and files whose bounds cannot match before it opens any
(``files_scanned`` against ``files_total`` shows it). Paging walks the scan's files in path order
with a cursor that pins the snapshot, so every page of one query reads the same data even while runs
commit; a cursor is signed with the server's key (:func:`cursor_key`), so a caller can hand back
only a position this API gave, for the same dataset and query. Only audited data leaves: a query
reads a snapshot on ``main``'s history (a staged run's snapshot on the ``audit`` branch, or one its
audit discarded, is :class:`NotServed`). Results are cached by (snapshot, normalised query): a new
snapshot is a new key, so nothing is ever stale. A snapshot that leaves the table (an erasure's
expiry, a rollback, maintenance) takes its pages with it: a read that finds the table's snapshots
changed drops them, and ``dataset_erase`` drops them from the shared store at once
(:func:`forget_erased`), so no erased row stays in a cache. The cache is bounded in bytes: an LRU in
the process under ``make run``, a Redis of its own in production (``BASE_DATASETS_CACHE_URL``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from base_platform.pipelines.data_control.table_actions import ControlError, dataset_table, parse_point
from base_platform.pipelines.data_distribution import MAX_LIMIT
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_storage.tables import NotServed, served

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot

    from base_platform.pipelines.data_control.erasure import ErasedSubject
    from base_platform.pipelines.spec import Pipeline


FILTER = re.compile(r"^(?P<column>[a-z][a-z0-9_]*)\s*(?P<op><=|>=|=|<|>|\s+in\s+)\s*(?P<value>.*)$")
CACHE_BYTES = 256 << 20  # the in-process store's bound, per api-server process
CACHE_PREFIX = "base:page:"
CURSOR_KEY_ENV = "BASE_DATASETS_CURSOR_KEY"
INT64 = (-(1 << 63), (1 << 63) - 1)
log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A query the dataset cannot answer: an unknown column, a bad filter, value or cursor (a 400)."""


class Position(BaseModel):
    """Where the next page of a query starts: what a cursor carries, signed."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    dataset: str
    snapshot_id: int
    file_index: int = Field(ge=0)
    offset: int = Field(ge=0)
    query: str


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
    try:
        if op == "in":
            value: Any = {_typed(pipeline, column, v.strip()) for v in raw.split(",") if v.strip()}
            if not value:  # `in ,` would match nothing: a query of no values is a mistake, not a filter
                raise QueryError("'in' needs at least one value")
        else:
            value = _typed(pipeline, column, raw)
    except QueryError as exc:  # the parameter first, as every other 400 says it
        raise QueryError(f"filter {text!r}: {exc}") from exc
    return cast("BooleanExpression", predicates[op](column, value))


def _typed(pipeline: Pipeline, column: str, raw: str) -> Any:
    spec = pipeline.contract.column(column)
    try:
        if spec.decimal:
            return _decimal(column, raw, *spec.decimal)
        if spec.type in ("int64", "float64"):
            return _number(column, raw, spec.type)
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


def _number(column: str, raw: str, kind: str) -> int | float:
    """An int64 within its range, a float64 that is finite: Iceberg's literals hold no other."""
    if kind == "int64":
        number = int(raw)
        if not INT64[0] <= number <= INT64[1]:
            raise QueryError(f"{column}: {raw!r} is outside int64")
        return number
    real = float(raw)
    if not math.isfinite(real):
        raise QueryError(f"{column}: {raw!r} is not a finite number")
    return real


def _decimal(column: str, raw: str, precision: int, scale: int) -> Decimal:
    """The literal at the column's scale (Iceberg compares decimals of one scale only): ``10`` is
    ``10.00`` of a decimal(18,2); a value that would need rounding, or more digits, is refused."""
    value = Decimal(raw)
    if not value.is_finite():
        raise QueryError(f"{column}: {raw!r} is not a finite number")
    try:
        scaled = value.quantize(Decimal(1).scaleb(-scale))
    except InvalidOperation as exc:  # more digits than any decimal the context can hold
        raise QueryError(f"{column}: {raw!r} does not fit a decimal({precision},{scale})") from exc
    if scaled != value:
        raise QueryError(f"{column}: {raw!r} has more than {scale} decimal places")
    if len(scaled.as_tuple().digits) > precision:
        raise QueryError(f"{column}: {raw!r} does not fit a decimal({precision},{scale})")
    return scaled


def cursor_key() -> bytes:
    """The key that signs cursors, the same in every api-server process of a deployment:
    ``BASE_DATASETS_CURSOR_KEY``, else derived from Airflow's ``[api] secret_key`` (which those
    processes already share for the UI's sessions)."""
    secret = os.environ.get(CURSOR_KEY_ENV)
    if not secret:
        from airflow.configuration import conf

        secret = conf.get("api", "secret_key", fallback="")
    if not secret:
        raise RuntimeError(f"no key to sign cursors: set {CURSOR_KEY_ENV} or [api] secret_key")
    return hmac.new(secret.encode(), b"base-platform datasets cursor v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cursor(snapshot_id: int, file_index: int, offset: int, query: Query) -> str:
    """``<position>.<signature>``: the position in base64 JSON, the HMAC of it in base64."""
    position = Position(
        dataset=query.dataset,
        snapshot_id=snapshot_id,
        file_index=file_index,
        offset=offset,
        query=query.key(),
    )
    body = _b64(position.model_dump_json().encode())
    return f"{body}.{_b64(hmac.new(cursor_key(), body.encode(), hashlib.sha256).digest())}"


def _position(query: Query) -> Position | None:
    """The cursor's position (none: the first page), if this server signed it for this query."""
    if not query.cursor:
        return None
    body, _, signature = query.cursor.partition(".")
    try:
        given = _unb64(signature)
    except ValueError as exc:
        raise QueryError("cursor: not one this API gave") from exc
    if not hmac.compare_digest(given, hmac.new(cursor_key(), body.encode(), hashlib.sha256).digest()):
        raise QueryError("cursor: not one this API gave (unsigned, edited, or another server's)")
    try:
        position = Position.model_validate_json(_unb64(body))
    except (ValueError, ValidationError) as exc:
        raise QueryError("cursor: not one this API gave") from exc
    if position.dataset != query.dataset or position.query != query.key():
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
    """The snapshot a query reads: the one its cursor pins, else its as_of, else the current one;
    always one on ``main``'s history."""
    position = _position(query)
    if position is not None:
        return served(table, position.snapshot_id, "cursor")
    if not query.as_of:
        current = table.current_snapshot()
        if current is None:
            raise NotServed(f"{'.'.join(table.name())}: no published snapshot yet")
        return current
    try:
        point = parse_point(query.as_of)
    except ControlError as exc:
        raise QueryError(f"as_of: {exc}") from exc
    if isinstance(point, int):
        return served(table, point, "as_of")
    found = table.snapshot_as_of_timestamp(int(point.timestamp() * 1000))
    if found is None:
        raise NotServed(f"as_of: {'.'.join(table.name())} had no snapshot at {point.isoformat()}")
    return served(table, found.snapshot_id, "as_of")


def page(pipeline: Pipeline, query: Query) -> Page:
    """One page of the query's rows (uncached)."""
    check(pipeline, query)
    table = dataset_table(pipeline.spec.name, tables.shared_catalog())
    return _page(pipeline, query, table, _snapshot(table, query))


def _page(pipeline: Pipeline, query: Query, table: Table, snapshot: Snapshot) -> Page:
    import pyarrow as pa
    from pyiceberg.expressions import AlwaysTrue, And
    from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow

    position = _position(query)
    file_index, offset = (position.file_index, position.offset) if position else (0, 0)
    expression: BooleanExpression = AlwaysTrue()
    for text in query.filters:
        expression = And(expression, parse_filter(pipeline, text))
    scan = table.scan(
        row_filter=expression, selected_fields=query.columns or ("*",), snapshot_id=snapshot.snapshot_id
    )
    tasks = sorted(scan.plan_files(), key=lambda task: task.file.file_path)
    if position is not None and not (
        file_index < len(tasks) and offset < tasks[file_index].file.record_count
    ):  # a signed cursor is this server's, but check: a position outside the snapshot reads nothing sane
        raise QueryError("cursor: its position is outside the snapshot's rows; start again")
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


PAGE_OVERHEAD_BYTES = 2048
"""What a cached page costs besides its rows (its key, the Page and its Arrow table's objects): an
empty page counted as 1 byte let distinct empty queries grow the cache far past its bound."""


class MemoryPageStore:
    """Pages in this process, least recently used out first, bounded in bytes (``make run``)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        from cachetools import LRUCache

        self._pages: LRUCache[str, Page] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda page: PAGE_OVERHEAD_BYTES + page.rows.nbytes
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
    """A page's key names the cursor key too: a page keeps its ``next_cursor``, signed, so after a
    new key a cached page would hand out cursors no server accepts."""
    signer = hashlib.sha256(cursor_key()).hexdigest()[:12]
    return f"{dataset}:{snapshot_id}:{query.key()}:{signer}:{query.cursor or ''}"


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
        table = dataset_table(pipeline.spec.name, tables.shared_catalog())
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
    url = os.environ.get("BASE_DATASETS_CACHE_URL")
    if not url:
        return {}
    store, within = RedisPageStore(url), tables.catalog()  # one catalog for the erasure's tables
    dropped = {}
    for name in subject.tables:
        table = tables.load(name, within)
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
    """Rows as JSON: digests as hex, decimals as strings, times as ISO 8601, a float that is not
    finite (a sensor's NaN mean) as null: JSON has no NaN, and the response would be a 500."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
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

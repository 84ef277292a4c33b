"""Typed pipeline specs (config/pipelines/<name>.yaml) and data contracts (config/contracts/).

Everything is checked at load, and an error names the file and the key, so a bad spec fails
the DAG file's import in the dag-processor rather than a run an hour later.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from base_platform.catalog.loader import CONFIG_DIR, CatalogError, load_model
from base_platform.types import StrictModel

# What each media kind's rows hold (multimodal_processing makes them); a media contract declares
# the common columns and any of its kind's.
MEDIA_COMMON_COLUMNS = ("file", "sha256", "bytes")  # which file, its content hash, its size
MEDIA_COLUMNS: dict[str, tuple[str, ...]] = {
    "document": ("pages", "title", "author", "created", "language", "text", "emails", "phones"),
    "image": ("format", "width", "height", "mode", "phash", "thumbnail", "exif", "gps_removed"),
    "geojson": (
        "feature",  # the feature's index in its FeatureCollection (0 for a bare one): in the key
        "geometry",
        "geometry_type",
        "crs",
        "min_x",
        "min_y",
        "max_x",
        "max_y",
        "area",
        "centroid_x",
        "centroid_y",
        "repaired",
        "properties",
    ),
    "timeseries": (
        "series",
        "start",
        "end",
        "frequency",
        "points_in",
        "duplicates",
        "out_of_order",
        "gaps",
        "buckets",
        "min",
        "max",
        "mean",
        "resampled",
    ),
}

# The media columns that name a file beside the table (``_media/<name>``): the file lives while a
# snapshot's rows name it (``data_control.maintenance.side_files``).
MEDIA_SIDE_COLUMNS = ("thumbnail", "resampled")

NAME = r"^[a-z][a-z0-9_]*$"
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
SCALAR_TYPES = ("string", "int64", "float64", "timestamp", "date", "bool", "binary")
DURATION = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_seconds(text: str) -> int:
    """``30s``, ``15m``, ``1h``, ``7d`` in seconds."""
    found = DURATION.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration like 15m, 1h or 7d")
    return int(found.group(1)) * UNIT_SECONDS[found.group(2)]


class Column(StrictModel):
    name: str = Field(pattern=NAME)
    type: str
    nullable: bool = True
    max_length: int | None = Field(default=None, gt=0)
    pattern: str | None = None
    allowed: tuple[str, ...] | None = None
    format: str | None = Field(default=None, description="strptime format for timestamp and date")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in SCALAR_TYPES:
            return value
        match = DECIMAL.match(value.replace(" ", ""))
        if not match or not 0 < int(match.group(2)) < int(match.group(1)) <= 38:
            raise ValueError(f"unknown type {value!r}: use {', '.join(SCALAR_TYPES)} or decimal(p,s)")
        return value.replace(" ", "")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @property
    def decimal(self) -> tuple[int, int] | None:
        match = DECIMAL.match(self.type)
        return (int(match.group(1)), int(match.group(2))) if match else None


class Contract(StrictModel):
    name: str = Field(pattern=NAME)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="semantic version")
    primary_key: tuple[str, ...] = Field(min_length=1)
    columns: tuple[Column, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _keys_exist(self) -> Contract:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in {names}")
        for key in self.primary_key:
            if key not in names:
                raise ValueError(f"primary key column {key!r} is not a column")
            if self.column(key).nullable:
                raise ValueError(f"primary key column {key!r} must not be nullable")
        return self

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


class FileSource(StrictModel):
    """Files in a folder or under an S3 prefix; a file's checksum marks it read."""

    kind: Literal["files"] = "files"
    uri: str = Field(min_length=1, description="a local path or s3://bucket/prefix")
    glob: str = "*"
    format: Literal["csv", "ndjson", "parquet"]
    options: dict[str, str | int | bool] = Field(default_factory=dict)
    shard_mb: int = Field(
        256,
        ge=1,
        description="a bigger CSV or NDJSON file is split at record boundaries into shards of about this",
    )


class MediaSource(StrictModel):
    """Files of one media kind, each becoming one row (multimodal_processing)."""

    kind: Literal["media"]
    uri: str = Field(min_length=1, description="a local path or s3://bucket/prefix")
    glob: str = "*"
    format: Literal["document", "image", "geojson", "timeseries"]
    shard_mb: int = Field(32, ge=1, description="files are grouped, in path order, into shards of about this")
    files_per_shard: int = Field(250, ge=1, le=5000, description="and of at most this many files")
    exif_keep: tuple[str, ...] = Field(default=(), description="image: the EXIF tags kept, by name (Make)")
    keep_gps: bool = Field(False, description="image: keep GPS tags; data_security removes them by default")
    thumbnail_px: int = Field(128, ge=16, le=1024, description="image: the thumbnail's longer side")
    crs: str = Field("EPSG:4326", pattern=r"^EPSG:[0-9]+$", description="geojson: the CRS rows are stored in")
    source_crs: str = Field("EPSG:4326", pattern=r"^EPSG:[0-9]+$", description="geojson: the files' CRS")
    frequency: str | None = Field(default=None, description="timeseries: the resampling step, such as 1h")
    aggregation: Literal["mean", "sum", "min", "max", "last"] = "mean"
    max_file_mb: int = Field(256, ge=1, description="a larger file is quarantined unread")
    max_pixels: int = Field(50_000_000, ge=1, description="image: more pixels (by its header) is refused")
    max_pages: int = Field(2_000, ge=1, description="document: more pages is refused")
    max_depth: int = Field(64, ge=2, description="geojson: deeper nesting of arrays and objects is refused")
    max_seconds: float = Field(60, gt=0, description="a file whose reading takes longer is refused")

    @property
    def frequency_seconds(self) -> int | None:
        return duration_seconds(self.frequency) if self.frequency else None

    @model_validator(mode="after")
    def _kind_options(self) -> MediaSource:
        if self.frequency is not None:
            duration_seconds(self.frequency)
        if (self.format == "timeseries") != (self.frequency is not None):
            raise ValueError("`frequency` is required for format: timeseries, and only there")
        return self


class Pagination(StrictModel):
    """How an API pages: a token from the body, an offset, or RFC 8288 ``Link: <…>; rel="next"``."""

    type: Literal["cursor", "offset", "link"]
    page_size: int = Field(100, ge=1)
    size_param: str = Field("limit", min_length=1, description="the query parameter of the page size")
    param: str = Field(
        "cursor", min_length=1, description="cursor: the token's query parameter; offset: the offset's"
    )
    next: str = Field(
        "next_cursor", min_length=1, description="cursor: the dotted path of the next token in the body"
    )
    max_pages: int = Field(10_000, ge=1, description="the most pages one run reads; the next run goes on")


class HttpSource(StrictModel):
    """A paginated JSON API; credentials come from the Airflow HTTP connection, never from here."""

    kind: Literal["http"]
    connection: str = Field(min_length=1, description="Airflow HTTP connection: host, and the auth to send")
    path: str = Field(min_length=1, description="joined to the connection's host")
    records: str = Field("data", description="the dotted path of the records in a page; '' for a bare list")
    params: dict[str, str | int | bool] = Field(default_factory=dict)
    pagination: Pagination
    cursor: str | None = Field(
        default=None, pattern=NAME, description="incremental: the contract column that grows with each change"
    )
    cursor_param: str | None = Field(
        default=None, min_length=1, description="the query parameter asking for records after a cursor"
    )
    retries: int = Field(6, ge=0, description="attempts after the first, on 429, 5xx and connection errors")
    timeout_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _incremental_whole(self) -> HttpSource:
        if bool(self.cursor) != bool(self.cursor_param):
            raise ValueError("an incremental API needs both `cursor` and `cursor_param`")
        return self


class PostgresSource(StrictModel):
    """A Postgres table read incrementally by a cursor column, in keyset chunks."""

    kind: Literal["postgres"]
    connection: str = Field("postgres_default", min_length=1, description="Airflow Postgres connection")
    table: str = Field(pattern=rf"{IDENTIFIER}\.{IDENTIFIER}", description="schema.table")
    cursor: str = Field(pattern=NAME, description="the contract column that grows with each change")
    chunk_rows: int = Field(100_000, ge=1, description="rows per shard (keyset ranges of about this)")
    lookback: str | None = Field(
        default=None,
        description="re-read this far behind the position each run (a duration such as 10m, or a count "
        "for an integer cursor): rows a transaction open at planning committed late; known keys are dropped",
    )


class StreamBatch(StrictModel):
    """How much of a stream one run takes, and when the stream starts a run."""

    min_events: int = Field(10_000, ge=1, description="a run starts once this many events wait")
    max_wait_seconds: float = Field(10, gt=0, description="or once the oldest waiting event is this old")
    max_events: int = Field(500_000, ge=1, description="the most events one run reads (backpressure)")


class RedisStreamSource(StrictModel):
    """A Redis stream read by a consumer group; each entry holds one event as JSON in ``field``."""

    kind: Literal["redis_stream"]
    connection: str = Field("redis_default", min_length=1, description="Airflow connection of the Redis")
    stream: str = Field(min_length=1)
    group: str = Field("base", min_length=1, description="the consumer group the pipeline reads as")
    field: str = Field("event", min_length=1, description="the entry field that holds the event's JSON")
    batch: StreamBatch = StreamBatch()
    retention_hours: float = Field(
        24, ge=0, description="committed entries older than this are trimmed (XTRIM MINID) after each ack"
    )
    max_event_bytes: int = Field(
        1 << 20, ge=64, description="an event larger than this is quarantined unread (memory stays bounded)"
    )
    max_lag_seconds: float | None = Field(
        default=None,
        gt=0,
        description="notify (circuit_breaker.notify) when the oldest waiting event is older",
    )


Source = Annotated[
    FileSource | HttpSource | PostgresSource | RedisStreamSource | MediaSource, Field(discriminator="kind")
]
INCREMENTAL_TYPES = ("timestamp", "date", "int64")


class NotNull(StrictModel):
    rule: Literal["not_null"]
    column: str


class Range(StrictModel):
    rule: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None


class Regex(StrictModel):
    rule: Literal["regex"]
    column: str
    pattern: str


class AcceptedValues(StrictModel):
    rule: Literal["accepted_values"]
    column: str
    values: tuple[str, ...] = Field(min_length=1)


class Unique(StrictModel):
    rule: Literal["unique"]
    columns: tuple[str, ...] = Field(min_length=1)


class Freshness(StrictModel):
    rule: Literal["freshness"]
    column: str
    max_age_hours: float = Field(gt=0)
    future_tolerance_minutes: float = Field(
        default=5, ge=0, description="newest events further ahead of now than this are not fresh: bad clocks"
    )


QualityRule = Annotated[
    NotNull | Range | Regex | AcceptedValues | Unique | Freshness, Field(discriminator="rule")
]


class Protection(StrictModel):
    classification: Literal["pii", "sensitive", "public"]
    protect: Literal["hmac", "mask", "drop", "encrypt", "none"] = "none"
    keep_last: int = Field(default=0, ge=0, description="mask: characters left visible at the end")
    canonical: Literal["email", "phone"] | None = Field(
        default=None,
        description="hmac: the value's canonical form is hashed (an e-mail trimmed and lower-cased, a "
        "phone number's digits and leading +), so the same person always has the same pseudonym",
    )
    separator: str | None = Field(
        default=None,
        min_length=1,
        description="hmac: the value holds several (a document's e-mails), split on this; each is "
        "canonicalised and hashed alone and the column stores the list of digests, so each matches",
    )

    @model_validator(mode="after")
    def _protected_unless_public(self) -> Protection:
        if self.classification != "public" and self.protect == "none":
            raise ValueError(f"a {self.classification} column needs a protection (hmac, mask, drop, encrypt)")
        if self.canonical and self.protect != "hmac":
            raise ValueError("canonical applies to hmac columns")
        if self.separator and self.protect != "hmac":
            raise ValueError("separator applies to hmac columns")
        return self


class Security(StrictModel):
    hmac_key: str = Field(
        default="platform/pipelines#hmac_key", pattern=r"^[\w/-]+#\w+$", description="Vault KV path#key"
    )
    transit_key: str = Field(
        default="pipelines", pattern=r"^[\w-]+$", description="Vault transit key for encrypt"
    )
    columns: dict[str, Protection] = Field(default_factory=dict)

    @property
    def encrypted(self) -> list[str]:
        return sorted(name for name, p in self.columns.items() if p.protect == "encrypt")

    @property
    def separators(self) -> dict[str, str]:
        """Each multi-value HMAC column's separator."""
        return {name: p.separator for name, p in self.columns.items() if p.separator}


PARTITION = re.compile(r"^(?:day\((?P<day>[a-z][a-z0-9_]*)\)|(?P<identity>[a-z][a-z0-9_]*))$")


class Partition(StrictModel):
    """One field of the table's Iceberg partition spec: a column as is, or the day of a timestamp."""

    column: str
    transform: Literal["identity", "day"]

    @property
    def name(self) -> str:
        """Iceberg's default name for the field, which is also the data files' folder."""
        return self.column if self.transform == "identity" else f"{self.column}_{self.transform}"


class Storage(StrictModel):
    uri: str = Field(min_length=1)
    partition_by: tuple[str, ...] = Field(default=(), description="columns (identity) or day(<timestamp>)")
    compression: Literal["zstd"] = "zstd"
    target_file_mb: int = Field(default=128, gt=0)

    @field_validator("partition_by")
    @classmethod
    def _partition_syntax(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not PARTITION.match(entry):
                raise ValueError(f"partition {entry!r}: use a column name or day(<column>)")
        return value

    @property
    def partitions(self) -> tuple[Partition, ...]:
        found = [PARTITION.match(entry) for entry in self.partition_by]
        return tuple(
            Partition(column=m["day"], transform="day")
            if m["day"]
            else Partition(column=m["identity"], transform="identity")
            for m in found
            if m
        )


class Retention(StrictModel):
    """How long a dataset keeps its history and its rows (``dataset_maintenance`` applies both)."""

    snapshots_days: int = Field(default=7, gt=0, description="time travel and rollback reach this far back")
    data_days: int | None = Field(
        default=None, gt=0, description="rows whose day() partition is older are deleted; None keeps all"
    )


class PostgresTarget(StrictModel):
    """Upsert each snapshot into a table of a consumer's Postgres (an Airflow connection)."""

    target: Literal["postgres"]
    name: str = Field(pattern=NAME, description="the target's task: publish_<name>")
    conn_id: str = Field(min_length=1)
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$", description="<schema>.<table>")


class S3Target(StrictModel):
    """Export each snapshot's changed partitions as Parquet with a manifest, under ``uri``."""

    target: Literal["s3"]
    name: str = Field(pattern=NAME, description="the target's task: publish_<name>")
    uri: str = Field(min_length=1, description="s3://bucket/prefix, or a path (relative: under the root)")


class WebhookTarget(StrictModel):
    """Tell subscribers (the webhook behind an HTTP connection) each snapshot and its counts."""

    target: Literal["webhook"]
    name: str = Field(pattern=NAME, description="the target's task: publish_<name>")
    http_conn_id: str = Field(min_length=1)


Target = Annotated[PostgresTarget | S3Target | WebhookTarget, Field(discriminator="target")]


class CircuitBreaker(StrictModel):
    """When a run's audited snapshot stays off ``main`` (write-audit-publish), and when the
    pipeline stops its own schedule until an operator publishes or discards the audit."""

    max_quarantine_rate: float = Field(
        default=0.1, ge=0, le=1, description="a run quarantining more of its rows than this trips"
    )
    max_consecutive_failures: int = Field(default=3, ge=1, description="this many failed runs in a row trip")
    notify: str | None = Field(
        default=None, min_length=1, description="HTTP connection of a webhook told when it trips"
    )


class Route(StrictModel):
    """Keep the input's events whose ``field`` is ``value``: one routed dataset, its own contract."""

    field: str = Field(pattern=NAME)
    value: str = Field(min_length=1)


class Join(StrictModel):
    """Enrich each event from a reference dataset, as the reference is when the batch runs."""

    dataset: str = Field(pattern=NAME, description="the reference dataset, read at its current snapshot")
    key: str = Field(pattern=NAME, description="the column both have (YAML reads a bare `on` as true)")
    columns: tuple[str, ...] = Field(min_length=1, description="the reference's columns to add")


class Window(StrictModel):
    """Event-time windows per key: tumbling (``hop_minutes`` = ``size_minutes``) or hopping.

    A window is written once, when the watermark (the newest event time less
    ``allowed_lateness_minutes``) has passed its end; an event that arrives after all of its
    windows were written is quarantined as ``late``.
    """

    key: str = Field(pattern=NAME)
    time: str = Field(pattern=NAME, description="the event-time column")
    size_minutes: int = Field(ge=1)
    hop_minutes: int | None = Field(default=None, ge=1, description="default: size_minutes (tumbling)")
    allowed_lateness_minutes: int = Field(0, ge=0)
    future_tolerance_minutes: int = Field(
        5, ge=0, description="an event further ahead of now is refused: it never moves the watermark"
    )
    where: str | None = Field(default=None, min_length=1, description="an SQL condition on the events")
    aggregates: dict[str, str] = Field(min_length=1, description="output column -> SQL aggregate")

    @property
    def hop(self) -> int:
        return self.hop_minutes or self.size_minutes

    @model_validator(mode="after")
    def _hops_fit(self) -> Window:
        if self.size_minutes % self.hop:
            raise ValueError("size_minutes must be a multiple of hop_minutes")
        return self


class Write(StrictModel):
    """How a run's rows meet the table's (dlt's write dispositions are the model).

    ``append``: a key the table already has is quarantined as a repeated key. ``merge``: an
    upsert by primary key; of the versions of a key (the run's and the table's) the one with the
    largest ``order_by`` wins, an older one or a tie with the table's is superseded, counted,
    not stored (so a replay changes nothing).
    """

    mode: Literal["append", "merge"] = "append"
    order_by: str | None = Field(
        default=None, pattern=NAME, description="merge: the column whose largest value is the latest"
    )

    @model_validator(mode="after")
    def _order_for_merge(self) -> Write:
        if (self.mode == "merge") != (self.order_by is not None):
            raise ValueError("`order_by` is what `merge` needs, and only merge")
        return self


class PipelineSpec(StrictModel):
    name: str = Field(pattern=NAME)
    description: str = ""
    contract: str = Field(pattern=NAME, description="config/contracts/<contract>.yaml")
    source: Source
    quality: tuple[QualityRule, ...] = ()
    security: Security = Security()
    storage: Storage
    write: Write = Write()
    retention: Retention = Retention()
    schedule: str | None = None
    execution: Literal["local", "kubernetes"] = "local"
    distribution: tuple[Target, ...] = Field(default=(), description="where each snapshot is published")
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    inputs: tuple[str, ...] = Field(default=(), description="a derived pipeline: the datasets it reads")
    transform: str | None = Field(
        default=None, min_length=1, description="a derived pipeline: DataFusion SQL over its inputs"
    )
    route: Route | None = Field(default=None, description="a stream operator over the one input")
    join: Join | None = Field(default=None, description="a stream operator: enrich from a reference")
    window: Window | None = Field(default=None, description="a stream operator: windows per key")

    @model_validator(mode="before")
    @classmethod
    def _derived_source(cls, data: object) -> object:
        """A derived pipeline's files are the results ``derive`` writes: by default under
        ``data/<name>/derived``, as Parquet. A source without ``kind`` is files."""
        if isinstance(data, dict) and data.get("inputs") and "source" not in data:
            folder = f"data/{data.get('name')}/derived"
            data = {**data, "source": {"uri": folder, "glob": "*.parquet", "format": "parquet"}}
        if isinstance(data, dict) and isinstance(data.get("source"), dict) and "kind" not in data["source"]:
            return {**data, "source": {"kind": "files", **data["source"]}}  # files: the first kind
        return data

    @property
    def operators(self) -> bool:
        """A stream operator pipeline: it reads only what its input appended since its last run."""
        return any((self.route, self.join, self.window))

    @property
    def references(self) -> tuple[str, ...]:
        """Every dataset this one reads: its inputs and a join's reference."""
        return (*self.inputs, *((self.join.dataset,) if self.join else ()))

    @model_validator(mode="after")
    def _derived_whole(self) -> PipelineSpec:
        if bool(self.inputs) != bool(self.transform or self.operators):
            raise ValueError("a derived pipeline needs `inputs` and a `transform` (or stream operators)")
        if self.transform and self.operators:
            raise ValueError("a derived pipeline has a `transform` or stream operators, not both")
        if self.operators and (len(self.inputs) != 1 or (self.route and self.window)):
            raise ValueError("stream operators read one input: a `route` or a `window`, and a `join`")
        if self.inputs and self.schedule:
            raise ValueError("a derived pipeline runs when its inputs change: it has no `schedule`")
        if self.name in self.inputs:
            raise ValueError(f"{self.name} cannot be its own input")
        return self

    @field_validator("distribution")
    @classmethod
    def _unique_targets(cls, value: tuple[Target, ...]) -> tuple[Target, ...]:
        names = [target.name for target in value]
        if len(names) != len(set(names)):
            raise ValueError(f"target names must be unique: {names}")
        return value


class Pipeline(StrictModel):
    """A spec with its contract, cross-checked."""

    spec: PipelineSpec
    contract: Contract

    @property
    def rules(self) -> tuple[QualityRule, ...]:
        """The spec's quality rules, and the primary key's ``unique`` where the spec does not say
        it: a dataset's primary key is unique in every snapshot, whatever the spec states."""
        key = self.contract.primary_key
        if self.merges or any(isinstance(rule, Unique) and rule.columns == key for rule in self.spec.quality):
            return self.spec.quality
        return (*self.spec.quality, Unique(rule="unique", columns=key))

    @property
    def merges(self) -> bool:
        """Whether a run upserts by key (``write: merge``): then its commit, not a rule, keeps
        the key unique, the latest version winning."""
        return self.spec.write.mode == "merge"


def _check_columns(pipeline: Pipeline, path: Path) -> None:
    names = set(pipeline.contract.names)
    for index, rule in enumerate(pipeline.spec.quality):
        used = rule.columns if isinstance(rule, Unique) else (rule.column,)
        for column in used:
            if column not in names:
                raise CatalogError(path, f"quality[{index}]", f"unknown column {column!r}")
            protection = pipeline.spec.security.columns.get(column)
            if isinstance(rule, Unique) and protection and protection.protect in ("hmac", "mask", "drop"):
                raise CatalogError(
                    path,
                    f"quality[{index}]",
                    f"unique across a run's files is checked on stored values, and {column!r} is "
                    f"stored as {protection.protect}",
                )
    for column in pipeline.spec.security.columns:
        if column not in names:
            raise CatalogError(path, f"security.columns.{column}", "unknown column")
        protection = pipeline.spec.security.columns[column]
        if column in pipeline.contract.primary_key and protection.protect in ("hmac", "mask", "drop"):
            raise CatalogError(
                path,
                f"security.columns.{column}",
                f"the primary key is kept unique on stored values, and {column!r} would be stored as "
                f"{protection.protect}",
            )
    for index, partition in enumerate(pipeline.spec.storage.partitions):
        _check_partition(pipeline, partition, path, f"storage.partition_by[{index}]")
    _check_distribution(pipeline, path)
    if pipeline.spec.retention.data_days and not any(
        p.transform == "day" for p in pipeline.spec.storage.partitions
    ):
        raise CatalogError(
            path, "retention.data_days", "needs a day(<column>) partition, whose old days it deletes whole"
        )


def _check_distribution(pipeline: Pipeline, path: Path) -> None:
    encrypted = pipeline.spec.security.encrypted
    for index, target in enumerate(pipeline.spec.distribution):
        if target.target != "webhook" and encrypted:
            raise CatalogError(
                path,
                f"distribution[{index}]",
                f"{target.target} publishes columns as stored, and {', '.join(encrypted)} are "
                "encrypted with the platform's keys",
            )


def _check_partition(pipeline: Pipeline, partition: Partition, path: Path, where: str) -> None:
    if partition.column not in pipeline.contract.names:
        raise CatalogError(path, where, f"unknown column {partition.column!r}")
    column = pipeline.contract.column(partition.column)
    if partition.transform == "day" and column.type not in ("timestamp", "date"):
        raise CatalogError(
            path, where, f"day() needs a timestamp or date column, {column.name} is {column.type}"
        )
    protection = pipeline.spec.security.columns.get(partition.column)
    if protection and protection.protect != "none":
        raise CatalogError(path, where, f"{column.name} is stored as {protection.protect}: not a partition")


def load_pipeline(path: Path, contracts_dir: Path | None = None) -> Pipeline:
    spec = load_model(PipelineSpec, path)
    if spec.name != path.stem:
        raise CatalogError(path, "name", f"must match the file name {path.stem!r}")
    contract_path = (contracts_dir or path.parent.parent / "contracts") / f"{spec.contract}.yaml"
    contract = load_model(Contract, contract_path)
    pipeline = Pipeline(spec=spec, contract=contract)
    _check_columns(pipeline, path)
    _check_cursor(pipeline, path)
    _check_media(pipeline, path)
    _check_write(pipeline, path)
    return pipeline


def _check_write(pipeline: Pipeline, path: Path) -> None:
    """A merge orders by a stored column of a source pipeline, and no rule quarantines the
    versions it is there to choose between."""
    write = pipeline.spec.write
    if write.order_by is None:
        return
    if pipeline.spec.inputs or isinstance(pipeline.spec.source, MediaSource):
        raise CatalogError(
            path, "write.mode", "merge is for a source's records: a derived or media dataset appends"
        )
    if write.order_by not in pipeline.contract.names:
        raise CatalogError(path, "write.order_by", f"unknown column {write.order_by!r}")
    protection = pipeline.spec.security.columns.get(write.order_by)
    if protection and protection.protect != "none":
        raise CatalogError(path, "write.order_by", f"{write.order_by} is stored as {protection.protect}")
    for index, rule in enumerate(pipeline.spec.quality):
        if isinstance(rule, Unique):  # it would quarantine a newer version before the merge saw it
            raise CatalogError(
                path, f"quality[{index}]", "merge keeps the latest version of each key: no unique rule"
            )


def _check_media(pipeline: Pipeline, path: Path) -> None:
    """A media pipeline's contract holds only columns its kind's files give, and which file."""
    source = pipeline.spec.source
    if not isinstance(source, MediaSource):
        return
    given = (*MEDIA_COMMON_COLUMNS, *MEDIA_COLUMNS[source.format])
    for index, column in enumerate(pipeline.contract.columns):
        if column.name not in given:
            raise CatalogError(
                path,
                "contract",
                f"columns[{index}] {column.name!r} is not one a {source.format} gives: {list(given)}",
            )
    if missing := [name for name in MEDIA_COMMON_COLUMNS if name not in pipeline.contract.names]:
        raise CatalogError(path, "contract", f"a media contract needs {missing}")
    if source.format == "geojson" and "feature" not in pipeline.contract.primary_key:
        raise CatalogError(
            path,
            "contract",
            "a geojson contract's primary_key needs feature: a FeatureCollection's features share its sha256",
        )


def cursor_of(pipeline: Pipeline) -> str | None:
    """The contract column an incremental source resumes by; None for files and streams."""
    source = pipeline.spec.source
    return source.cursor if isinstance(source, HttpSource | PostgresSource) else None


def _check_cursor(pipeline: Pipeline, path: Path) -> None:
    """An incremental source's cursor is a required contract column that can be ordered; a
    ``lookback`` is a count for an integer cursor, a duration of whole days for a date one."""
    cursor = cursor_of(pipeline)
    if cursor is None:
        return
    source = pipeline.spec.source
    if isinstance(source, PostgresSource) and source.lookback and cursor in pipeline.contract.names:
        kind = pipeline.contract.column(cursor).type
        if kind == "int64" and not source.lookback.isdigit():
            raise CatalogError(path, "source.lookback", "an int64 cursor looks back by a count, such as 1000")
        if kind != "int64":
            try:
                seconds = duration_seconds(source.lookback)
            except ValueError as exc:
                raise CatalogError(path, "source.lookback", str(exc)) from exc
            if kind == "date" and seconds % 86_400:
                raise CatalogError(
                    path, "source.lookback", "a date cursor looks back by whole days, such as 1d"
                )
    if cursor not in pipeline.contract.names:
        raise CatalogError(path, "source.cursor", f"unknown column {cursor!r}")
    column = pipeline.contract.column(cursor)
    if column.type not in INCREMENTAL_TYPES or column.nullable:
        raise CatalogError(
            path, "source.cursor", f"{cursor!r} must be a required {' or '.join(INCREMENTAL_TYPES)} column"
        )


@cache
def load_pipelines(config_dir: Path = CONFIG_DIR) -> tuple[Pipeline, ...]:
    """Every spec under config/pipelines, sorted by name, their ``inputs`` checked against each other."""
    paths = sorted((config_dir / "pipelines").glob("*.yaml"))
    pipelines = {path: load_pipeline(path) for path in paths}
    _check_inputs(pipelines)
    return tuple(pipelines.values())


def pipeline_named(name: str) -> Pipeline:
    """The pipeline of that dataset, or an error listing the ones there are."""
    found = {pipeline.spec.name: pipeline for pipeline in load_pipelines()}
    if name not in found:
        raise KeyError(f"no pipeline {name!r} in config/pipelines (there are {sorted(found)})")
    return found[name]


def _check_inputs(pipelines: dict[Path, Pipeline]) -> None:
    """Inputs name existing datasets that a derived pipeline can read, and never form a cycle."""
    by_name = {pipeline.spec.name: pipeline for pipeline in pipelines.values()}
    for path, pipeline in pipelines.items():
        for index, name in enumerate(pipeline.spec.references):
            where = f"inputs[{index}]" if index < len(pipeline.spec.inputs) else "join.dataset"
            if name not in by_name:
                raise CatalogError(path, where, f"unknown dataset {name!r}")
            if encrypted := by_name[name].spec.security.encrypted:
                raise CatalogError(
                    path,
                    where,
                    f"{name} has encrypted columns ({', '.join(encrypted)}), which a transform cannot read",
                )
        if pipeline.spec.operators:
            _check_operators(path, pipeline, by_name)
        if cycle := _cycle(pipeline.spec.name, by_name, []):
            raise CatalogError(path, "inputs", f"inputs form a cycle: {' -> '.join(cycle)}")


def _cycle(name: str, by_name: dict[str, Pipeline], trail: list[str]) -> list[str] | None:
    if name in trail:
        return [*trail[trail.index(name) :], name]
    for upstream in by_name[name].spec.references:
        if upstream in by_name and (found := _cycle(upstream, by_name, [*trail, name])):
            return found
    return None


def _check_operators(path: Path, pipeline: Pipeline, by_name: dict[str, Pipeline]) -> None:
    """Each column an operator names is in the contract it reads, and each output column has a source."""
    spec, (source,) = pipeline.spec, pipeline.spec.inputs
    events = set(by_name[source].contract.names)
    if spec.route and spec.route.field not in events:
        raise CatalogError(path, "route.field", f"{source} has no column {spec.route.field!r}")
    added: set[str] = set()
    if spec.join:
        reference = set(by_name[spec.join.dataset].contract.names)
        if spec.join.key not in reference or spec.join.key not in events:
            raise CatalogError(path, "join.key", f"{spec.join.key!r} is not a column of both inputs")
        if missing := set(spec.join.columns) - reference:
            raise CatalogError(path, "join.columns", f"{spec.join.dataset} has no columns {sorted(missing)}")
        added = set(spec.join.columns)
    if spec.window:
        _check_window(path, pipeline, spec.window, events)
        return
    if missing := set(pipeline.contract.names) - events - added:
        raise CatalogError(path, "contract", f"no input has the columns {sorted(missing)}")
    digests = {n for n, p in by_name[source].spec.security.columns.items() if p.protect == "hmac"}
    if hashed := (set(pipeline.contract.names) - added) & digests:
        raise CatalogError(path, "contract", f"{source} stores {sorted(hashed)} as HMAC digests, not text")


def _check_window(path: Path, pipeline: Pipeline, window: Window, events: set[str]) -> None:
    for key in ("key", "time"):
        if getattr(window, key) not in events:
            raise CatalogError(path, f"window.{key}", f"the input has no column {getattr(window, key)!r}")
    wanted = {window.key, "window_start", "window_end", *window.aggregates}
    if wanted != set(pipeline.contract.names):
        raise CatalogError(path, "window", f"the contract's columns must be {sorted(wanted)}")


def classify_change(old: Contract, new: Contract) -> tuple[str, list[str]]:
    """``breaking`` or ``compatible``, with the reasons; a breaking change needs a new major."""
    reasons: list[str] = []
    before = {c.name: c for c in old.columns}
    after = {c.name: c for c in new.columns}
    for name, column in before.items():
        if name not in after:
            reasons.append(f"column {name} removed")
        elif after[name].type != column.type:
            reasons.append(f"column {name} type {column.type} -> {after[name].type}")
        elif column.nullable and not after[name].nullable:
            reasons.append(f"column {name} became required")
    for name in after.keys() - before.keys():
        if not after[name].nullable:
            reasons.append(f"new column {name} is required")
    if old.primary_key != new.primary_key:
        reasons.append(f"primary key {list(old.primary_key)} -> {list(new.primary_key)}")
    if reasons:
        return "breaking", reasons
    return "compatible", [f"column {name} added (nullable)" for name in sorted(after.keys() - before.keys())]

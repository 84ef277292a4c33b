"""What flows between a pipeline's tasks: the shards discover plans and what process_shard staged.

Records are frozen: a later step makes a new one (``dataclasses.replace``) instead of changing
the one it was given, so what each step added is visible in its signature. Between tasks they
travel as JSON (XCom, a pod's ``return.json``) through ``to_json`` and ``from_json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Shard:
    """One slice of the source that a retry reads again whole: a file, or a piece of one
    (``start`` to ``end``, cut at record boundaries), or for another ``kind`` the ``span`` it
    names (an API's records after a cursor, a table's keyset range)."""

    index: int
    source: str
    checksum: str  # of the whole file; of the span for other kinds
    size: int  # the bytes this shard reads, where known before reading
    start: int = 0
    end: int | None = None  # None: the whole file
    kind: str = "files"
    span: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.index:05d}-{self.checksum[:12]}"

    @property
    def label(self) -> str:
        """The source as the quarantine and errors name it; a piece's record numbers start at its start."""
        if self.span is not None:
            return f"{self.source} {json.dumps(self.span, sort_keys=True)}"
        return self.source if self.end is None else f"{self.source} bytes {self.start}-{self.end}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["span"] = dict(self.span) if self.span is not None else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Shard:
        fields = ("index", "source", "checksum", "size", "start", "end")
        return cls(**{k: data[k] for k in fields}, kind=data.get("kind", "files"), span=data.get("span"))


@dataclass(frozen=True)
class PartSpan:
    """One part of a shard: records ``first`` to ``stop`` of it, written to ``files`` data files in turn."""

    first: int
    stop: int
    files: int


@dataclass(frozen=True)
class ShardResult:
    """What process_shard staged for one shard, and its counts; commit's input.

    ``files`` and ``quarantine`` are paths under the target: staged ones as process_shard
    returns them, published ones once commit has placed them. ``repeated`` names the quarantine
    files of rows that the run-wide uniqueness check moved out of this shard's stored rows.
    """

    shard: Shard
    rows_in: int
    rows_stored: int
    rows_quarantined: int
    files: tuple[str, ...]
    parts: tuple[PartSpan, ...]
    quarantine: str | None
    null_counts: Mapping[str, int]
    latest_event: str | None
    started_at: str
    seconds: float
    stage_seconds: Mapping[str, float]
    repeated: tuple[str, ...] = field(default=())
    bytes_in: int = 0  # the file bytes; for other kinds the raw values' bytes, counted as read
    position: Any = None  # the highest cursor value read (JSON), for an incremental source
    rows_superseded: int = 0  # write: merge: rows a newer version of their key beat at commit

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shard"] = {**self.shard.to_json(), "id": self.shard.id, "label": self.shard.label}
        data["parts"] = [{"records": [p.first, p.stop], "files": p.files} for p in self.parts]
        data["files"], data["repeated"] = list(self.files), list(self.repeated)
        data["null_counts"], data["stage_seconds"] = dict(self.null_counts), dict(self.stage_seconds)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardResult:
        return cls(
            shard=Shard.from_json(data["shard"]),
            rows_in=int(data["rows_in"]),
            rows_stored=int(data["rows_stored"]),
            rows_quarantined=int(data["rows_quarantined"]),
            files=tuple(data["files"]),
            parts=tuple(PartSpan(p["records"][0], p["records"][1], p["files"]) for p in data["parts"]),
            quarantine=data["quarantine"],
            null_counts=dict(data["null_counts"]),
            latest_event=data["latest_event"],
            started_at=data["started_at"],
            seconds=float(data["seconds"]),
            stage_seconds=dict(data["stage_seconds"]),
            repeated=tuple(data.get("repeated") or ()),
            bytes_in=int(data["bytes_in"]),
            position=data.get("position"),
            rows_superseded=int(data.get("rows_superseded") or 0),
        )


def _ordered(position: Any) -> Any:
    """Times by time, not text; ints and a stream's ``[ms, seq]`` entry ids as they are; a keyset
    ``[cursor, key...]`` by its cursor, then its key."""
    if isinstance(position, list) and position and isinstance(position[0], str):
        return [_ordered(position[0]), *position[1:]]
    if isinstance(position, str):
        try:
            return datetime.fromisoformat(position)
        except ValueError:
            return position
    return position


def highest(positions: Iterable[Any]) -> Any:
    """The furthest of some positions (None where nothing was read). A cursor value committed
    before keysets meets a keyset ``[cursor, key...]`` as ``[cursor]``: before every key of it."""
    found = [p for p in positions if p is not None]
    mixed = any(isinstance(p, list) for p in found) and not all(isinstance(p, list) for p in found)
    return max(found, key=lambda p: _ordered([p] if mixed and not isinstance(p, list) else p), default=None)


SUMMARY_PREFIX = "base."  # our keys in snapshot summaries (and table properties)
# A run record's keys in its snapshot's summary, in the order commit has always written them.
_SUMMARY = (
    "dataset", "run", "dag_run", "interval", "started_at", "contract_version", "full_refresh", "rows_in",
    "rows_stored", "rows_quarantined", "bytes_in", "null_counts", "freshness", "quarantine", "inputs",
    "wall_seconds", "processing_seconds", "stage_seconds", "gb_per_hour", "lineage", "lag", "position",
    "adopted_committed_at", "rows_superseded", "rows_updated",
)  # fmt: skip
# Text fields, read as stored (the rest is JSON, or text where it does not parse: a time position).
_TEXT = frozenset({"dataset", "run", "dag_run", "started_at", "contract_version", "adopted_committed_at"})
# Left out of the summary when None (runs adopted from old manifests may lack the first three).
_OPTIONAL = frozenset(
    {
        "started_at",
        "freshness",
        "wall_seconds",
        "lineage",
        "lag",
        "position",
        "adopted_committed_at",
        "rows_superseded",
        "rows_updated",
    }
)
_SNAPSHOT = ("snapshot_id", "operation", "committed_at", "files", "bytes_stored")
_AUDIT = ("published", "breaker", "checks")  # what commit (with publish) and the audit task add


def summary_key(name: str) -> str:
    """A run record field's key in a snapshot summary: ``rows_in`` is ``base.rows-in``."""
    return f"{SUMMARY_PREFIX}{name.replace('_', '-')}"


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: mappings as dicts, tuples as lists (XCom keeps tuples apart)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _decoded(value: str) -> Any:
    """A summary value as the old reader took it: JSON where it parses, else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def seconds_since(when: str) -> float:
    """A commit's age (``committed_at``) by the clock now: the page and /metrics compute it as
    they answer, never when they read the figures, so it grows while a cached read is old."""
    return round((datetime.now(UTC) - datetime.fromisoformat(when)).total_seconds(), 1)


@dataclass(frozen=True)
class RunRecord:
    """A run's facts, kept in its snapshot's summary: the only record of a run, which the breaker,
    the monitor, the catalog and the page read back.

    The summary holds strings (``base.<name>``, nested values as JSON) exactly as the dict this
    replaced wrote them, so tables written before read back the same. The snapshot's own facts
    are Iceberg's, added when read; ``published``, ``breaker`` and ``checks`` are its audit's.
    """

    dataset: str
    run: str
    dag_run: str  # "dag_id/run_id"; "" outside a DAG
    interval: Mapping[str, str | None]
    contract_version: str
    full_refresh: bool
    rows_in: int
    rows_stored: int
    rows_quarantined: int
    bytes_in: int
    null_counts: Mapping[str, int]
    processing_seconds: float  # summed over shards: CPU-bound work, not the run's time
    stage_seconds: Mapping[str, float]
    gb_per_hour: float | None
    quarantine: tuple[str, ...] = ()  # paths under the target; an expired run's record drops them
    inputs: tuple[Mapping[str, str], ...] = ()  # {"source", "sha256"} each; dropped as quarantine is
    started_at: str | None = None
    freshness: tuple[Mapping[str, Any], ...] | None = None
    wall_seconds: float | None = None
    lineage: Mapping[str, str] | None = None  # a derived run's input snapshots, by dataset
    lag: Mapping[str, Any] | None = None  # a stream's backlog as the run began
    position: Any = None  # where the run leaves its source (JSON), for an incremental one
    adopted_committed_at: str | None = None  # a run adopted from the format before Iceberg
    rows_superseded: int | None = None  # write: merge: rows in that a newer version beat, not stored
    rows_updated: int | None = None  # write: merge: the table's rows a newer version replaced
    snapshot_id: int | None = None
    operation: str | None = None
    committed_at: str | None = None
    files: int = 0
    bytes_stored: int = 0
    published: bool | None = None
    breaker: str | None = None
    checks: tuple[str, ...] | None = None

    def _summary(self) -> dict[str, Any]:
        return {
            name: _plain(getattr(self, name))
            for name in _SUMMARY
            if getattr(self, name) is not None or name not in _OPTIONAL
        }

    def to_properties(self) -> dict[str, str]:
        """The snapshot summary's properties: strings as they are, other values as JSON."""
        return {
            summary_key(name): value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            for name, value in self._summary().items()
        }

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> RunRecord | None:
        """The record in a snapshot summary; None for a snapshot no run made (maintenance, erasure)."""
        if summary_key("run") not in properties:
            return None
        return cls.from_json(
            {
                name: raw if name in _TEXT else _decoded(raw)
                for name in _SUMMARY
                if (raw := properties.get(summary_key(name))) is not None
            }
        )

    def to_json(self) -> dict[str, Any]:
        data = self._summary() | {name: getattr(self, name) for name in _SNAPSHOT}
        if self.published is not None:  # the breaker's reason with it, None when it passed
            data |= {"published": self.published, "breaker": self.breaker}
        return data | ({"checks": list(self.checks)} if self.checks is not None else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        def listed(name: str) -> tuple[Any, ...] | None:
            return tuple(data[name]) if data.get(name) is not None else None

        known = {name: data[name] for name in (*_SUMMARY, *_SNAPSHOT, *_AUDIT) if name in data}
        return cls(
            **known
            | {
                "full_refresh": data["full_refresh"] in (True, "true"),
                "quarantine": tuple(data.get("quarantine") or ()),
                "inputs": tuple(data.get("inputs") or ()),
                "freshness": listed("freshness"),
                "checks": listed("checks"),
            }
        )


@dataclass(frozen=True)
class DeriveResult:
    """What a derived pipeline's ``derive`` made, for discover (``folder``; None: nothing new) and
    commit (the input snapshots as ``lineage``, whether it ``replace``s the dataset, a window's
    ``position``)."""

    folder: str | None
    lineage: Mapping[str, str]
    rows: int
    replace: bool
    position: Any = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lineage": dict(self.lineage)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeriveResult:
        return cls(
            data["folder"],
            dict(data["lineage"]),
            int(data["rows"]),
            bool(data["replace"]),
            data.get("position"),
        )


@dataclass(frozen=True)
class CommitRequest:
    """What ``engine.commit`` publishes for a run, and the run's facts its record keeps besides.

    ``key`` protects the rows a repeat across files sends to quarantine; it is a secret, so
    ``to_json`` leaves it out and ``from_json`` takes it again.
    """

    run_key: str
    results: tuple[ShardResult, ...]
    target_uri: str
    interval: Mapping[str, str | None]
    full_refresh: bool = False
    started_at: str | None = None  # when discovery began (default: the first shard's start)
    key: bytes | None = field(default=None, repr=False)
    dag_run: str | None = None  # "dag_id/run_id", linking the snapshot to its run
    publish: bool = True  # audit at once, and publish or open the breaker
    lineage: Mapping[str, str] | None = None  # a derived run's input snapshots, by dataset
    lag: Mapping[str, Any] | None = None  # a stream's backlog as the run began
    position: Any = None  # where the run leaves its source, when its shards do not say

    def to_json(self) -> dict[str, Any]:
        data = {
            f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in ("key", "results")
        }
        return data | {"results": [result.to_json() for result in self.results]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], key: bytes | None = None) -> CommitRequest:
        return cls(
            **{f.name: data[f.name] for f in fields(cls) if f.name in data}
            | {"results": tuple(ShardResult.from_json(result) for result in data["results"]), "key": key}
        )

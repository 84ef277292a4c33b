"""What flows between a pipeline's tasks: the shards discover plans and what process_shard staged.

Records are frozen: a later step makes a new one (``dataclasses.replace``) instead of changing
the one it was given, so what each step added is visible in its signature. Between tasks they
travel as JSON (XCom, a pod's ``return.json``) through ``to_json`` and ``from_json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
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
        )


def _ordered(position: Any) -> Any:
    """Times by time, not text; ints and a stream's ``[ms, seq]`` entry ids as they are."""
    return datetime.fromisoformat(position) if isinstance(position, str) else position


def highest(positions: Iterable[Any]) -> Any:
    """The furthest of some positions (None where nothing was read)."""
    return max((p for p in positions if p is not None), key=_ordered, default=None)

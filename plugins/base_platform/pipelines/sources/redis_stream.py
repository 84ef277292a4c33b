"""``kind: redis_stream``: a Redis stream read by a consumer group, exactly once into the table.

Each entry holds one event as JSON in the spec's ``field``. The position is the last committed
entry id (``[ms, seq]``), kept in the snapshot with the rows, so the table and the position
change together; the group's bookkeeping follows:

- ``plan`` first acks every pending entry at or before the position (committed, but the run died
  before its ack), then claims a dead run's pending entries after it (``XAUTOCLAIM``), then reads
  new ones (``XREADGROUP``), at most ``batch.max_events`` in all, and cuts that id range into
  shards of ``batch.shard_events``;
- ``read`` reads a shard's id range with ``XRANGE``, so a retry reads exactly the same entries;
- ``acknowledge`` acks (``XACK``) every pending entry up to a published position, after the audit.

A run killed anywhere before its snapshot is published leaves the position where it was: the
next run claims the same entries and commits them once. Entries must not be trimmed before they
are committed (trim with ``MINID`` below the committed position, never ``MAXLEN`` blindly).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import socket
from collections.abc import Iterator
from typing import Any

from base_platform.pipelines import streams
from base_platform.pipelines.modules import ingestion
from base_platform.pipelines.modules.ingestion import RawBatch
from base_platform.pipelines.records import Shard
from base_platform.pipelines.sources import Resume, span_shard
from base_platform.pipelines.spec import Pipeline, RedisStreamSource

PAGE = 50_000  # entries per XRANGE, XAUTOCLAIM or XACK call


def plan(pipeline: Pipeline, uri: str, resume: Resume) -> list[Shard]:
    source = spec_of(pipeline)
    position = _entry(resume.position)
    client = _client(source)
    _ensure_group(client, source)
    acknowledge_upto(client, source, position)
    ids = _claim(client, source, position)
    if len(ids) < source.batch.max_events:
        ids += _new(client, source, source.batch.max_events - len(ids))
    if not ids:
        return []
    ids.sort()
    upto = ids[-1]
    cuts = [ids[i - 1] for i in range(source.batch.shard_events, len(ids), source.batch.shard_events)]
    bounds: list[streams.EntryId | None] = [position, *cuts, upto]
    label = f"redis://{source.connection}/{source.stream}"
    return [
        span_shard(index, "redis_stream", label, {"after": _json(a), "upto": _json(b)})
        for index, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def read(pipeline: Pipeline, shard: Shard) -> Iterator[RawBatch]:
    """The shard's entries in id order, a page at a time, decoded as NDJSON (bad JSON is a reject)."""
    source, span = spec_of(pipeline), shard.span or {}
    client, names = _client(source), pipeline.contract.names
    start, upto = streams.after(_entry(span.get("after"))), streams.format_id(span["upto"])
    field = source.field.encode()
    while entries := client.xrange(source.stream, min=start, max=upto, count=PAGE):
        lines = [fields.get(field, b"") for _, fields in entries]
        yield from ingestion.read(io.BytesIO(b"\n".join(lines)), "ndjson", names)
        start = streams.after(streams.parse_id(entries[-1][0]))


def acknowledge(pipeline: Pipeline, position: Any) -> int:
    """Ack the group's pending entries up to a published position; returns how many."""
    source = spec_of(pipeline)
    return acknowledge_upto(_client(source), source, _entry(position))


def acknowledge_upto(client: Any, source: RedisStreamSource, position: streams.EntryId | None) -> int:
    if position is None:
        return 0
    acked = 0
    while pending := client.xpending_range(
        source.stream, source.group, min="-", max=streams.format_id(position), count=PAGE
    ):
        acked += client.xack(source.stream, source.group, *[p["message_id"] for p in pending])
    return acked


def backlog(pipeline: Pipeline) -> streams.Backlog:
    """What the group has not committed yet, and how old its oldest event is (Redis's clock)."""
    import redis.asyncio

    source = spec_of(pipeline)

    async def measure() -> streams.Backlog:
        async with redis.asyncio.Redis(**_settings(source)) as client:
            return await streams.backlog(client, source.stream, source.group)

    return asyncio.run(measure())


def spec_of(pipeline: Pipeline) -> RedisStreamSource:
    source = pipeline.spec.source
    assert isinstance(source, RedisStreamSource), f"{pipeline.spec.name} reads {source.kind}, not a stream"
    return source


def _settings(source: RedisStreamSource) -> dict[str, Any]:
    from airflow.sdk import BaseHook

    return streams.redis_settings(BaseHook.get_connection(source.connection))


def _client(source: RedisStreamSource) -> Any:
    import redis

    return redis.Redis(**_settings(source))


def _ensure_group(client: Any, source: RedisStreamSource) -> None:
    """The consumer group, from the stream's start, made once (and the stream, if none yet)."""
    import redis

    try:
        client.xgroup_create(source.stream, source.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _consumer() -> str:
    """This process as a consumer of the group; a dead one's entries are claimed by the next."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _claim(client: Any, source: RedisStreamSource, position: streams.EntryId | None) -> list[streams.EntryId]:
    """The pending entries after the position (delivered to a run that died), now ours."""
    start = streams.format_id((position[0], position[1] + 1)) if position else "0-0"
    ids: list[streams.EntryId] = []
    while len(ids) < source.batch.max_events:
        start, claimed, _deleted = client.xautoclaim(
            source.stream,
            source.group,
            _consumer(),
            min_idle_time=0,
            start_id=start,
            count=min(PAGE, source.batch.max_events - len(ids)),
        )  # not JUSTID: redis-py drops the next start then; claims are rare, their payloads small
        ids += [streams.parse_id(entry) for entry, _ in claimed]
        if streams.parse_id(start) == (0, 0):
            break
    return ids


def _new(client: Any, source: RedisStreamSource, at_most: int) -> list[streams.EntryId]:
    """Entries never delivered to the group, oldest first."""
    ids: list[streams.EntryId] = []
    while len(ids) < at_most:
        answer = client.xreadgroup(
            source.group, _consumer(), {source.stream: ">"}, count=min(PAGE, at_most - len(ids))
        )
        entries = answer[0][1] if answer else []
        if not entries:
            break
        ids += [streams.parse_id(entry) for entry, _ in entries]
    return ids


def _entry(position: Any) -> streams.EntryId | None:
    return (int(position[0]), int(position[1])) if position is not None else None


def _json(entry: streams.EntryId | None) -> list[int] | None:
    return list(entry) if entry is not None else None

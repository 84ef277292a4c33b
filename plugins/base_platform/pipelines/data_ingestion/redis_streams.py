"""What a Redis stream's consumer group owes: entry ids, the connection, and the backlog.

Shared by the ``redis_stream`` source (in task processes) and the trigger that starts a run (in
the triggerer, where nothing heavy is imported). Every age is measured on Redis's own clock
(``TIME``, against the milliseconds in an entry's id), never against this machine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EntryId = tuple[int, int]  # (milliseconds, sequence), as Redis orders entries


def parse_id(raw: bytes | str) -> EntryId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(entry: EntryId | list[int]) -> str:
    return f"{entry[0]}-{entry[1]}"


def after(entry: EntryId | list[int] | None) -> str:
    """The XRANGE/XAUTOCLAIM start just past ``entry`` (the whole stream for None)."""
    return "-" if entry is None else f"({format_id(entry)}"


def redis_settings(conn: Any) -> dict[str, Any]:
    """Keyword arguments of ``redis.Redis`` (or ``redis.asyncio.Redis``) for an Airflow connection:
    host, port, the password (and ACL user as login), the database as schema, ``extra.ssl``."""
    extra = conn.extra_dejson
    return {
        "host": conn.host or "localhost",
        "port": int(conn.port or 6379),
        "username": conn.login or None,
        "password": conn.password or None,
        "db": int(conn.schema or extra.get("db") or 0),
        "ssl": bool(extra.get("ssl", False)),
    }


@dataclass(frozen=True)
class Backlog:
    """The events a group has not committed: never delivered yet, or delivered and pending (in a
    run now, or left by a run that died), each with the age of its oldest by Redis's clock."""

    undelivered: int
    undelivered_age_seconds: float
    pending: int
    pending_age_seconds: float
    last_delivered: str | None  # the group's last delivered entry id: it moves when a run reads

    def to_json(self) -> dict[str, Any]:
        return {
            "undelivered": self.undelivered,
            "undelivered_age_seconds": round(self.undelivered_age_seconds, 3),
            "pending": self.pending,
            "pending_age_seconds": round(self.pending_age_seconds, 3),
        }


async def group_backlog(client: Any, stream: str, group: str) -> Backlog:
    """The group's backlog, read with ``redis.asyncio`` (a task runs it with ``asyncio.run``)."""
    length = int(await client.xlen(stream))
    groups = await client.xinfo_groups(stream) if length else []
    found = next((g for g in groups if _text(g.get("name")) == group), None)
    now = await client.time()
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000

    def age(entry: bytes | str | None) -> float:
        return max(0, now_ms - parse_id(entry)[0]) / 1000 if entry else 0.0

    pending, oldest_pending = 0, None
    if found is not None and int(found.get("pending") or 0):
        summary = await client.xpending(stream, group)
        pending, oldest_pending = int(summary["pending"]), summary["min"]
    last = _text(found.get("last-delivered-id")) if found is not None else None
    first = await client.xrange(stream, min=after(parse_id(last)) if last else "-", count=1) if length else []
    lag = found.get("lag") if found is not None else length
    undelivered = int(lag) if lag is not None else length  # Redis may not know the lag after a trim
    oldest_new = first[0][0] if first else None
    return Backlog(undelivered if first else 0, age(oldest_new), pending, age(oldest_pending), last)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value

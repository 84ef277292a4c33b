"""The event trigger that starts ``pipeline_<name>`` for a stream: it watches the stream itself.

Airflow's Redis message-queue trigger listens to pub/sub, which drops what is published while
no one listens (a triggerer restart, say). This one polls the consumer group's backlog, which
Redis keeps, so a restart loses nothing: it fires when at least ``min_events`` wait, or when the
oldest waiting event is ``max_wait_seconds`` old (by Redis's clock), or when a dead run left
pending entries that old. After firing it waits for a run to start reading (the group's last
delivered id moves) before it fires again, so a burst makes one run, not one per poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from base_platform.pipelines.data_ingestion import redis_streams

log = logging.getLogger(__name__)
REARM_WAITS = 10  # fire again after this many max_wait_seconds even if no run read (a run that failed)


class StreamBacklogTrigger(BaseEventTrigger):
    def __init__(
        self,
        *,
        conn_id: str,
        stream: str,
        group: str,
        min_events: int,
        max_wait_seconds: float,
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.conn_id, self.stream, self.group = conn_id, stream, group
        self.min_events, self.max_wait_seconds, self.poll_seconds = min_events, max_wait_seconds, poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "stream": self.stream,
                "group": self.group,
                "min_events": self.min_events,
                "max_wait_seconds": self.max_wait_seconds,
                "poll_seconds": self.poll_seconds,
            },
        )

    def due(self, backlog: redis_streams.Backlog) -> str | None:
        """Why a run should start now, or None."""
        if backlog.undelivered >= self.min_events:
            return f"{backlog.undelivered} events wait"
        if backlog.undelivered and backlog.undelivered_age_seconds >= self.max_wait_seconds:
            return f"the oldest waiting event is {backlog.undelivered_age_seconds:.1f} s old"
        if backlog.pending and backlog.pending_age_seconds >= REARM_WAITS * self.max_wait_seconds:
            return f"{backlog.pending} events pending for {backlog.pending_age_seconds:.1f} s"
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis.asyncio

        from base_platform.connections import aget_connection_patiently

        settings = redis_streams.redis_settings(await aget_connection_patiently(self.conn_id))
        fired: tuple[str | None, float] | None = None  # the last delivered id when we fired, and when
        async with redis.asyncio.Redis(**settings) as client:
            while True:
                try:
                    backlog = await redis_streams.group_backlog(client, self.stream, self.group)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("Redis %s unreachable (%s); polling again", self.stream, exc)
                    await asyncio.sleep(self.poll_seconds)
                    continue
                waiting = fired is not None and fired[0] == backlog.last_delivered
                if waiting and fired and time.monotonic() - fired[1] < REARM_WAITS * self.max_wait_seconds:
                    await asyncio.sleep(self.poll_seconds)
                    continue
                if reason := self.due(backlog):
                    log.info("%s: %s; starting a run", self.stream, reason)
                    yield TriggerEvent(
                        {"stream": self.stream, "reason": reason, "backlog": backlog.to_json()}
                    )
                    fired = (backlog.last_delivered, time.monotonic())
                await asyncio.sleep(self.poll_seconds)

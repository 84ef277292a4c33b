"""What ``pipeline_<name>`` adds for a stream source: its schedule (an ``AssetWatcher`` on the
stream's backlog), the lag it measures before each batch, and the ack after the audit.

The DAG is otherwise the same as for files: the batch is the run's one shard, and the snapshot
holds the last entry id, so the table and the position change together. The ack
comes after the audit has published; if the run dies first, the next run's ``discover`` acks
what is committed and claims the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, AssetWatcher, task

from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, PipelineSpec, RedisStreamSource

log = logging.getLogger(__name__)


def is_stream(spec: PipelineSpec) -> bool:
    return isinstance(spec.source, RedisStreamSource)


def watched_source(spec: PipelineSpec, asset: Asset) -> Asset:
    """The source's Asset, watched by a backlog trigger of the stream (for a stream source)."""
    from base_platform.pipelines.data_streaming.backlog_trigger import StreamBacklogTrigger

    source = spec.source
    assert isinstance(source, RedisStreamSource)
    trigger = StreamBacklogTrigger(
        conn_id=source.connection,
        stream=source.stream,
        group=source.group,
        min_events=source.batch.min_events,
        max_wait_seconds=source.batch.max_wait_seconds,
    )
    watcher = AssetWatcher(name=f"{spec.name}_backlog", trigger=trigger)
    return Asset(name=asset.name, uri=asset.uri, group=asset.group, watchers=[watcher])


def measure_lag(pipeline: Pipeline, context: Any) -> dict[str, Any] | None:
    """The stream's backlog as the batch starts: logged, kept in the run's record, and told to
    ``circuit_breaker.notify`` when its oldest event waited longer than ``max_lag_seconds``."""
    source = pipeline.spec.source
    if not isinstance(source, RedisStreamSource):
        return None
    from base_platform.pipelines.data_ingestion.sources import redis_stream

    backlog = redis_stream.backlog(pipeline)
    lag = backlog.to_json()
    log.info("Stream %s, group %s: %s", source.stream, source.group, lag)
    oldest = max(backlog.undelivered_age_seconds, backlog.pending_age_seconds)
    conn_id = pipeline.spec.circuit_breaker.notify
    if source.max_lag_seconds and oldest > source.max_lag_seconds and conn_id:
        from base_platform.notify import WebhookNotifier

        title = f"pipeline_{pipeline.spec.name}: stream lag {oldest:.0f} s"
        text = (
            f"{source.stream}: {backlog.undelivered} events not yet read, {backlog.pending} pending; "
            f"the oldest waited {oldest:.0f} s (max_lag_seconds {source.max_lag_seconds:.0f})."
        )
        WebhookNotifier(http_conn_id=conn_id, title=title, text=text, colour="FFB900").notify(context)
    return lag


def acknowledge_task(pipeline: Pipeline) -> Any:
    """A stream's ``acknowledge``, which takes the audit's record: it acks up to the position the
    audit published (the pipeline's plan puts it after ``audit``)."""

    @task
    def acknowledge(audited: Any) -> int:
        from base_platform.pipelines.data_ingestion.sources import redis_stream

        position = RunRecord.from_json(audited).position
        acked = redis_stream.acknowledge(pipeline, position)
        log.info("Acked %d entries up to %s", acked, position)
        return acked

    return acknowledge

"""Connection lookups from triggers that outlast a restart of the metadata database.

The Task SDK reports any failure of its lookup (the API server cannot reach Postgres while it
restarts, say) as "isn't defined". A connection does not vanish for a few seconds, so a trigger
asks again for a bounded time before it believes that; one that really is missing still fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import tenacity
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

if TYPE_CHECKING:
    from airflow.sdk import Connection

# structlog, not stdlib logging: the triggerer only routes structlog events to task logs.
log = structlog.get_logger(logger_name=__name__)
LOOKUP_PATIENCE_SECONDS = 60.0


async def aget_connection_patiently(
    conn_id: str, patience: float = LOOKUP_PATIENCE_SECONDS, pause: float = 2.0
) -> Connection:
    """``BaseHook.aget_connection``, asked again for ``patience`` seconds while it says not found."""
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_delay(patience),
        wait=tenacity.wait_fixed(pause),
        retry=tenacity.retry_if_exception_type(AirflowNotFoundException),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "Connection %s not found; asking again for %.0f s at most", conn_id, patience
        ),
    )
    async for attempt in retrying:
        with attempt:
            return await BaseHook.aget_connection(conn_id)
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

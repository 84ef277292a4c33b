"""The plugin's own worker threads. A plain ``def`` route runs in anyio's default thread pool, the
one Airflow's own sync endpoints (the DAG list, task instances, ...) run in: 40 page requests each
waiting on a hung catalog would leave Airflow's REST API none. Our routes run their blocking work
here instead, in at most ``PLUGIN_THREADS`` threads; a request that finds them all taken waits up
to ``THREAD_WAIT_SECONDS`` for one, then gets a 503 with ``Retry-After`` (:class:`Busy`) rather
than queueing without end behind a hung read.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

PLUGIN_THREADS = 8
METRICS_THREADS = 2
"""/metrics' own, so eight slow dataset scans cannot cost Prometheus its scrape (and its alerts)."""
THREAD_WAIT_SECONDS = 5.0
P = ParamSpec("P")
T = TypeVar("T")


class Busy(Exception):
    """Every plugin thread stayed taken for ``THREAD_WAIT_SECONDS``: a 503 to try again later."""


@dataclass(frozen=True)
class _Threads:
    admission: anyio.CapacityLimiter  # a request holds one of these while its work runs
    workers: anyio.CapacityLimiter  # what anyio's to_thread counts; never short, admission is


POOLS = {"page": PLUGIN_THREADS, "metrics": METRICS_THREADS}
# one pair per pool and event loop (an api-server worker has one loop; a test client makes its own)
_THREADS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Threads]] = (
    weakref.WeakKeyDictionary()
)


def _threads(pool: str) -> _Threads:
    pools = _THREADS.setdefault(asyncio.get_running_loop(), {})
    if pool not in pools:
        pools[pool] = _Threads(anyio.CapacityLimiter(POOLS[pool]), anyio.CapacityLimiter(POOLS[pool]))
    return pools[pool]


def plugin_threads(pool: str = "page") -> anyio.CapacityLimiter:
    """The running event loop's limiter of the pool's requests at work (for tests and metrics)."""
    return _threads(pool).admission


async def run_blocking(call: Callable[[], T], pool: str = "page") -> T:
    """``call()`` in one of the pool's threads, never on the event loop or in Airflow's pool.

    :raises Busy: no thread of the pool came free within ``THREAD_WAIT_SECONDS``.
    """
    threads = _threads(pool)
    with anyio.move_on_after(THREAD_WAIT_SECONDS) as waiting:
        await threads.admission.acquire()
    if waiting.cancelled_caught:
        raise Busy(f"all {POOLS[pool]} of the {pool} worker threads stayed busy {THREAD_WAIT_SECONDS:g} s")
    try:
        return await anyio.to_thread.run_sync(call, limiter=threads.workers)
    finally:
        threads.admission.release()


def in_pool(pool: str) -> Callable[[Callable[P, T]], Callable[P, Awaitable[T]]]:
    """A blocking route or dependency as an ``async`` one that runs it in the pool's threads.
    FastAPI reads the parameters and the return type through ``functools.wraps``' ``__wrapped__``."""

    def wrap(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(route)
        async def in_plugin_thread(*args: P.args, **kwargs: P.kwargs) -> T:
            return await run_blocking(functools.partial(route, *args, **kwargs), pool)

        return in_plugin_thread

    return wrap


off_loop = in_pool("page")
"""Every route but /metrics: the page, its API and the datasets and features APIs."""

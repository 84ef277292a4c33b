"""The plugin's own worker threads. A plain ``def`` route runs in anyio's default thread pool, the
one Airflow's own sync endpoints (the DAG list, task instances, ...) run in: 40 page requests each
waiting 20 s on a hung catalog would leave Airflow's REST API none. Our routes run their blocking
work here instead, in at most ``PLUGIN_THREADS`` threads; a request past those waits its turn
without costing Airflow a thread.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

PLUGIN_THREADS = 8
P = ParamSpec("P")
T = TypeVar("T")
# one limiter per event loop (an api-server worker has one; a test client makes its own)
_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def plugin_threads() -> anyio.CapacityLimiter:
    """The running event loop's limiter for the plugin's blocking work."""
    loop = asyncio.get_running_loop()
    limiter = _LIMITERS.get(loop)
    if limiter is None:
        limiter = _LIMITERS[loop] = anyio.CapacityLimiter(PLUGIN_THREADS)
    return limiter


async def run_blocking(call: Callable[[], T]) -> T:
    """``call()`` in one of the plugin's threads, never on the event loop or in Airflow's pool."""
    return await anyio.to_thread.run_sync(call, limiter=plugin_threads())


def off_loop(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """A blocking route or dependency as an ``async`` one that runs it in the plugin's threads.
    FastAPI reads the parameters and the return type through ``functools.wraps``' ``__wrapped__``."""

    @functools.wraps(route)
    async def in_plugin_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_blocking(functools.partial(route, *args, **kwargs))

    return in_plugin_thread

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
THREAD_WAIT_SECONDS = 5.0
P = ParamSpec("P")
T = TypeVar("T")


class Busy(Exception):
    """Every plugin thread stayed taken for ``THREAD_WAIT_SECONDS``: a 503 to try again later."""


@dataclass(frozen=True)
class _Threads:
    admission: anyio.CapacityLimiter  # a request holds one of these while its work runs
    workers: anyio.CapacityLimiter  # what anyio's to_thread counts; never short, admission is


# one pair per event loop (an api-server worker has one; a test client makes its own)
_THREADS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Threads] = weakref.WeakKeyDictionary()


def _threads() -> _Threads:
    loop = asyncio.get_running_loop()
    threads = _THREADS.get(loop)
    if threads is None:
        threads = _THREADS[loop] = _Threads(
            anyio.CapacityLimiter(PLUGIN_THREADS), anyio.CapacityLimiter(PLUGIN_THREADS)
        )
    return threads


def plugin_threads() -> anyio.CapacityLimiter:
    """The running event loop's limiter of the plugin's requests at work (for tests and metrics)."""
    return _threads().admission


async def run_blocking(call: Callable[[], T]) -> T:
    """``call()`` in one of the plugin's threads, never on the event loop or in Airflow's pool.

    :raises Busy: no plugin thread came free within ``THREAD_WAIT_SECONDS``.
    """
    threads = _threads()
    with anyio.move_on_after(THREAD_WAIT_SECONDS) as waiting:
        await threads.admission.acquire()
    if waiting.cancelled_caught:
        raise Busy(f"all {PLUGIN_THREADS} of the page's worker threads stayed busy {THREAD_WAIT_SECONDS:g} s")
    try:
        return await anyio.to_thread.run_sync(call, limiter=threads.workers)
    finally:
        threads.admission.release()


def off_loop(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """A blocking route or dependency as an ``async`` one that runs it in the plugin's threads.
    FastAPI reads the parameters and the return type through ``functools.wraps``' ``__wrapped__``."""

    @functools.wraps(route)
    async def in_plugin_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_blocking(functools.partial(route, *args, **kwargs))

    return in_plugin_thread

"""Load test of the datasets API, and its floor: the same queries through pyiceberg in one process.

``ingest_throughput.through_airflow`` runs it on ``make run``'s api-server once the benchmark's
table is committed: ``CLIENTS`` concurrent clients for ``SECONDS``, each drawing from a mix of
1,000-row pages of one day (a partition filter; half of them follow the cursor to the next
page) and point lookups by a random key. Every answer is checked (status, and a lookup finds its
key). Prints requests/s, p50, p95, p99 and errors against the targets; the floor runs the same
kind of queries straight through ``serving.page`` (no HTTP, no cache), one at a time.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

CLIENTS = 16
SECONDS = 30.0
TARGETS = {"p95_ms": 200.0, "errors": 0}
DAYS = [f"2026-11-{day:02d}" for day in range(20, 26)]  # the generator's five days, and the end


def queries(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    """One query of the mix: a day's first page (columns and all), or a point lookup."""
    if rng.random() < 0.5:
        first = rng.randrange(len(DAYS) - 1)
        day = [f"event_time>={DAYS[first]}T00:00:00Z", f"event_time<{DAYS[first + 1]}T00:00:00Z"]
        return {"filter": day, "limit": 1000}
    return {"filter": [f"transaction_id={rng.choice(keys)}"], "limit": 10}


async def _client(
    http: Any, rng: random.Random, keys: list[str], until: float, latencies: list[float], errors: list[str]
) -> None:
    while time.monotonic() < until:
        params = queries(rng, keys)
        started = time.perf_counter()
        answer = await http.get("/transactions/rows", params=params)
        ok = answer.status_code == 200
        if ok and params["limit"] == 1000 and rng.random() < 0.5 and answer.json()["next_cursor"]:
            answer = await http.get(
                "/transactions/rows", params=params | {"cursor": answer.json()["next_cursor"]}
            )
            ok = answer.status_code == 200
        if ok and params["limit"] == 10:
            key = params["filter"][0].split("=", 1)[1]
            ok = [row["transaction_id"] for row in answer.json()["rows"]] == [key]
        latencies.append(time.perf_counter() - started)
        if not ok:
            errors.append(f"{answer.status_code} {params}: {answer.text[:200]}")


async def _load(api: str, token: str, keys: list[str], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60, limits=limits) as http:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(
            *(_client(http, random.Random(n), keys, until, latencies, errors) for n in range(clients))
        )
        elapsed = time.monotonic() - started
    return {"requests": len(latencies), "per_second": len(latencies) / elapsed, **_percentiles(latencies)} | {
        "errors": errors
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "p99_ms": cuts[98] * 1000}


def load(
    api: str, token: str, keys: list[str], clients: int = CLIENTS, seconds: float = SECONDS
) -> dict[str, Any]:
    """``api``: the datasets API's base URL (``…/base-platform/api/datasets``)."""
    return asyncio.run(_load(api, token, keys, clients, seconds))


def floor(keys: list[str], count: int = 200) -> dict[str, float]:
    """The same mix through ``serving.page`` in this process (the catalog connection set)."""
    from base_platform.pipelines.data_distribution import serving
    from base_platform.pipelines.spec import pipeline_named

    pipeline = pipeline_named("transactions")
    rng, latencies = random.Random(99), []
    for _ in range(count):
        params = queries(rng, keys)
        started = time.perf_counter()
        serving.page(
            pipeline, serving.Query("transactions", filters=tuple(params["filter"]), limit=params["limit"])
        )
        latencies.append(time.perf_counter() - started)
    return _percentiles(latencies)


def report(served: dict[str, Any], direct: dict[str, float]) -> list[str]:
    """The lines ``make bench`` prints: the API against its targets, beside the floor."""
    lines = [
        f"datasets API, {CLIENTS} clients for {SECONDS:g} s: {served['requests']} requests, "
        f"{served['per_second']:.1f}/s; p50 {served['p50_ms']:.0f} ms, p95 {served['p95_ms']:.0f} ms, "
        f"p99 {served['p99_ms']:.0f} ms; {len(served['errors'])} errors",
        f"the same queries through pyiceberg in one process, one at a time (floor): p50 "
        f"{direct['p50_ms']:.0f} ms, p95 {direct['p95_ms']:.0f} ms, p99 {direct['p99_ms']:.0f} ms",
    ]
    p95_ok = served["p95_ms"] < TARGETS["p95_ms"]
    lines.append(f"{'API p95 ms':<30} {served['p95_ms']:8.1f} (target < 200): {'PASS' if p95_ok else 'FAIL'}")
    errors_ok = len(served["errors"]) == 0
    lines.append(
        f"{'API errors':<30} {len(served['errors']):8d} (target = 0): {'PASS' if errors_ok else 'FAIL'}"
    )
    lines += [f"API ERROR: {error}" for error in served["errors"][:5]]
    return lines

"""The datasets API's page cache in a real Redis, as the production stack runs it: shared by
processes, keyed by snapshot, bounded by the server's maxmemory, and never in the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.data_distribution import serving
from base_platform.pipelines.spec import Pipeline
from tests.e2e.services import redis
from tests.unit.pipelines.test_engine import generate_run, run
from tests.unit.pipelines.test_serving import pipeline  # noqa: F401 (the fixture: two runs)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _catalog(iceberg: Path) -> Path:
    return iceberg


def stats(url: str) -> dict[str, int]:
    import redis as client

    info: dict[str, Any] = client.Redis.from_url(url).info()  # type: ignore[assignment]
    return {key: int(info[key]) for key in ("keyspace_hits", "evicted_keys", "used_memory")}


def test_pages_are_shared_through_redis_until_the_snapshot_moves(
    pipeline: Pipeline,  # noqa: F811
    tmp_path: Path,
) -> None:
    query = serving.Query("transactions", limit=100)
    with redis(tmp_path / "redis") as url:
        first = serving.PageCache(serving.RedisPageStore(url)).get(pipeline, query)
        other_process = serving.PageCache(serving.RedisPageStore(url))  # another api-server's cache
        again = other_process.get(pipeline, query)
        assert stats(url)["keyspace_hits"] == 1
        assert again.rows.equals(first.rows) and again.rows.num_rows == 100
        assert (again.snapshot_id, again.next_cursor, again.files_planned) == (
            first.snapshot_id,
            first.next_cursor,
            first.files_planned,
        )
        generate_run(10, tmp_path / "in3", 3)
        run(pipeline, tmp_path / "in3", tmp_path / "out", "run-3")
        moved = other_process.get(pipeline, query)
        assert moved.snapshot_id != first.snapshot_id and stats(url)["keyspace_hits"] == 1


def test_redis_stays_within_its_maxmemory_and_a_redis_that_is_gone_costs_only_the_cache(
    pipeline: Pipeline,  # noqa: F811
    tmp_path: Path,
) -> None:
    with redis(tmp_path / "redis", "--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru") as url:
        pages = serving.PageCache(serving.RedisPageStore(url))
        for limit in range(200, 1200, 20):  # 50 pages of ~100 kB to 600 kB: far more than 3 MB
            pages.get(pipeline, serving.Query("transactions", limit=limit))
        found = stats(url)
        assert found["evicted_keys"] > 0 and found["used_memory"] < 4 << 20
    # the server is stopped: the answer comes from the table, the cache is skipped
    assert pages.get(pipeline, serving.Query("transactions", limit=100)).rows.num_rows == 100

"""Erasure reaches the copies the layers above keep: the datasets API's page cache (its shared
Redis and a process's own LRU), read through the real serving code before and after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from base_platform.pipelines.data_control import dag, erasure
from base_platform.pipelines.data_distribution import serving
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import Pipeline, pipeline_named
from tests.e2e.services import redis as redis_server
from tests.unit.pipelines.data_control.test_erasure_lineage import PSEUDONYM
from tests.unit.pipelines.test_engine import KEY
from tests.unit.pipelines.test_erase import two_runs_holding_the_subject


@pytest.fixture
def cache_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with redis_server(tmp_path / "cache") as url:
        monkeypatch.setenv("BASE_DATASETS_CACHE_URL", url)
        yield url


def redis_values(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    return [cast(bytes, value) for key in client.scan_iter("*") if (value := client.get(key)) is not None]


def queries(pipeline: Pipeline) -> list[serving.Query]:
    """Every row now, a small first page and its next one, and every row as of each snapshot."""
    table = tables.load(pipeline.spec.name)
    assert table is not None
    whole = serving.Query(pipeline.spec.name, limit=10_000)
    first = serving.Query(pipeline.spec.name, columns=("transaction_id", "customer_email"), limit=250)
    then = [
        serving.Query(pipeline.spec.name, as_of=str(s.snapshot_id), limit=10_000) for s in table.snapshots()
    ]
    return [whole, first, *then]


def read_all(pages: serving.PageCache, pipeline: Pipeline) -> list[serving.Page]:
    read = []
    for query in queries(pipeline):
        found = pages.get(pipeline, query)
        read.append(found)
        if query.limit == 250 and found.next_cursor:
            read.append(pages.get(pipeline, serving.Query(**{**query.__dict__, "cursor": found.next_cursor})))
    return read


def holds_subject(page: serving.Page) -> bool:
    return PSEUDONYM in serving.to_ipc(page.rows)


@pytest.mark.slow
def test_no_cached_page_serves_or_keeps_an_erased_subject(tmp_path: Path, cache_url: str) -> None:
    pipeline = pipeline_named("transactions")
    two_runs_holding_the_subject(pipeline, tmp_path)
    shared = serving.page_cache_from_env()  # the production store: Redis
    lru = serving.MemoryPageStore()
    own = serving.PageCache(lru)  # a process's LRU (make run)
    assert isinstance(shared.store, serving.RedisPageStore)
    assert any(holds_subject(page) for page in read_all(shared, pipeline))
    assert any(holds_subject(page) for page in read_all(own, pipeline))
    assert any(PSEUDONYM in value for value in redis_values(cache_url))

    followers = [dag.follower(path) for path in dag.ERASE_FOLLOWERS]  # as dataset_erase runs them
    assert serving.forget_erased in followers
    report = erasure.erase(
        pipeline, " ERASE.me@Example.com", KEY, who="dpo", request="gdpr-7", followers=followers
    )

    assert report["rows_removed"] == 3 and report["forget_erased"]["transactions"] > 0
    assert not any(PSEUDONYM in value for value in redis_values(cache_url))  # before any read
    for pages in (shared, own):
        assert not any(holds_subject(page) for page in read_all(pages, pipeline))
    assert not any(PSEUDONYM in value for value in redis_values(cache_url))
    kept = [lru.get(key) for key in lru.page_keys()]
    assert kept and not any(page is not None and holds_subject(page) for page in kept)


@pytest.mark.slow
def test_a_page_of_a_snapshot_that_left_the_table_is_dropped_at_the_next_read(tmp_path: Path) -> None:
    """Without an erasure's follower (another process's LRU): the next read notices the table's
    snapshots changed and drops the pages of those it lost, whatever query it serves."""
    pipeline = pipeline_named("transactions")
    two_runs_holding_the_subject(pipeline, tmp_path)
    lru = serving.MemoryPageStore()
    own = serving.PageCache(lru)
    read_all(own, pipeline)
    erasure.erase(pipeline, "erase.me@example.com", KEY, who="dpo", request="gdpr-8")
    other = own.get(pipeline, serving.Query("transactions", columns=("amount",), limit=5))
    assert not holds_subject(other)
    kept = [lru.get(key) for key in lru.page_keys()]
    assert not any(page is not None and holds_subject(page) for page in kept)

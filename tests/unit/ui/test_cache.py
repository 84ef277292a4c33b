"""The page's cache under slow, hung and failing reads: stale-while-revalidate, one refresh per
key, a deadline for the first read, and a lock never held while reading."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from base_platform.ui.state import NotReady, ReadFailed, TTLCache


class Gate:
    """A read that blocks until opened, counting how often it was started."""

    def __init__(self, value: str) -> None:
        self.value, self.calls, self.opened = value, 0, threading.Event()
        self.started = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        if not self.opened.wait(30):
            raise TimeoutError("never opened")
        return self.value


def test_a_hung_first_read_is_not_ready_within_its_deadline_and_blocks_no_other_key() -> None:
    cache, hung = TTLCache(60), Gate("late")
    begun = time.monotonic()
    with pytest.raises(NotReady):
        cache.read("argocd", hung, wait=0.3)
    assert time.monotonic() - begun < 2.0
    begun = time.monotonic()
    assert cache.get("reports", lambda: "here", wait=5) == "here"  # the lock is free meanwhile
    assert time.monotonic() - begun < 1.0
    hung.opened.set()
    assert cache.read("argocd", hung, wait=5).value == "late"
    assert hung.calls == 1


def test_twenty_concurrent_requests_start_one_read() -> None:
    cache, hung = TTLCache(60), Gate("once")
    with ThreadPoolExecutor(20) as pool:
        waits = [pool.submit(cache.read, "k", hung, 0.2) for _ in range(20)]
        for waiting in waits:
            with pytest.raises(NotReady):
                waiting.result()
    hung.opened.set()
    assert cache.get("k", hung, wait=5) == "once"
    assert hung.calls == 1


def test_a_stale_value_is_served_at_once_marked_with_its_age_while_one_refresh_runs() -> None:
    cache = TTLCache(0.2)
    assert cache.get("k", lambda: "old") == "old"
    time.sleep(0.3)
    hung = Gate("new")
    begun = time.monotonic()
    answers = [cache.read("k", hung, wait=10) for _ in range(5)]
    assert time.monotonic() - begun < 1.0  # nobody waited on the hung refresh
    assert {a.value for a in answers} == {"old"} and all(a.stale for a in answers)
    assert all(a.age_seconds >= 0.2 for a in answers) and answers[0].read_at
    assert hung.started.wait(5) and hung.calls == 1
    hung.opened.set()
    deadline = time.monotonic() + 5
    while (fresh := cache.read("k", hung)).value != "new":
        assert time.monotonic() < deadline, "the refresh never landed"
        time.sleep(0.02)
    assert not fresh.stale and fresh.error is None and hung.calls == 1


def test_a_failed_refresh_keeps_the_old_value_with_the_error_and_waits_its_turn() -> None:
    cache, calls = TTLCache(0.2), []
    cache.get("k", lambda: "old")
    time.sleep(0.3)

    def broken() -> str:
        calls.append(1)
        raise ConnectionError("argocd unreachable")

    cache.read("k", broken)
    deadline = time.monotonic() + 5
    while (answer := cache.read("k", broken)).error is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (answer.value, answer.stale) == ("old", True) and "unreachable" in answer.error
    assert len(calls) == 1  # no second read before the cache's seconds have passed again


def test_a_failed_first_read_raises_its_error_until_the_next_read_is_due() -> None:
    cache, calls = TTLCache(60), []

    def broken() -> str:
        calls.append(1)
        raise ConnectionError("refused")

    for _ in range(3):
        with pytest.raises(ReadFailed, match="refused"):
            cache.read("k", broken, wait=5)
    assert len(calls) == 1


def test_a_local_read_waits_for_the_refresh_its_age_started_up_to_its_bound() -> None:
    """The datasets' figures: a breaker that just opened is what a read after the TTL shows, not
    the state before; a refresh that hangs past ``fresh_wait`` still gives the old value, marked."""
    cache = TTLCache(0.2)
    assert cache.get("k", lambda: "closed") == "closed"
    time.sleep(0.3)
    assert cache.read("k", lambda: "open", fresh_wait=5).value == "open"
    time.sleep(0.3)
    hung = Gate("later")
    answer = cache.read("k", hung, fresh_wait=0.3)
    assert answer.value == "open" and answer.stale
    hung.opened.set()


def test_while_a_read_hangs_only_the_requests_of_its_first_seconds_wait() -> None:
    """A hung refresh of a local read: the request that started it waits ``fresh_wait``; one that
    comes later is answered at once (stale), and with nothing cached a NotReady at once, so a
    stream of requests does not hold a thread each for the whole wait."""
    cache, hung = TTLCache(0.1), Gate("later")
    assert cache.get("k", lambda: "old") == "old"
    time.sleep(0.2)
    begun = time.monotonic()
    assert cache.read("k", hung, fresh_wait=0.5).stale
    assert 0.4 < time.monotonic() - begun < 2
    begun = time.monotonic()
    for _ in range(5):
        assert cache.read("k", hung, fresh_wait=0.5).value == "old"
    assert time.monotonic() - begun < 0.2 and hung.calls == 1

    first, slow = TTLCache(60), Gate("first")
    with pytest.raises(NotReady):
        first.read("k", slow, wait=0.5)
    begun = time.monotonic()
    with pytest.raises(NotReady):
        first.read("k", slow, wait=0.5)
    assert time.monotonic() - begun < 0.2
    hung.opened.set()
    slow.opened.set()

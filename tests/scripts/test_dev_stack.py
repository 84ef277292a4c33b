"""A stopped or dead service leaves nothing running: a Celery worker's serve-logs, orphaned,
held its port and outlived whole test runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scripts import dev_stack


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_with_stubborn_child(home: Path, then: str) -> tuple[dev_stack.Stack, int]:
    """A service that starts a child ignoring SIGTERM, then runs ``then``; the stack and the child."""
    (home / "logs").mkdir()
    child_pid = home / "child.pid"
    stack = dev_stack.Stack(dict(os.environ))
    stack.start(
        "service", "bash", "-c", f"bash -c 'trap \"\" TERM; sleep 300' & echo $! > {child_pid}; {then}"
    )
    deadline = time.monotonic() + 10
    while not child_pid.exists() or not child_pid.read_text().strip():
        assert time.monotonic() < deadline, "the service did not start its child"
        time.sleep(0.05)
    return stack, int(child_pid.read_text())


def ended(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


def test_stop_ends_a_child_that_outlives_its_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev_stack, "HOME", tmp_path)
    stack, child = start_with_stubborn_child(tmp_path, "wait")
    assert running(child)
    stack.stop()
    assert ended(child)


@pytest.mark.slow
def test_a_service_found_dead_takes_its_children_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev_stack, "HOME", tmp_path)
    stack, child = start_with_stubborn_child(tmp_path, "sleep 1; exit 3")
    assert stack.supervise(restartable=set()) == "service"
    assert ended(child)

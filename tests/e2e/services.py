"""Postgres and Redis from Debian's packages, started on 127.0.0.1 for the production-topology e2e.

pytest-postgresql would be the library for this, but it runs ``pg_ctl`` as the current user
and Postgres refuses to run as root (dbfixtures/pytest-postgresql#341 and #455, closed without
a run-as option). CI runs as root, so the server is started here as the ``postgres`` user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port


def postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("Postgres is not installed: `make test` installs Debian's postgresql package")
    return found[-1].parent


def _run(args: list[str | Path], env: dict[str, str] | None = None) -> None:
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, check=True)


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway cluster with an ``airflow`` database; yields its SQLAlchemy URL.

    It lives in its own directory under /tmp: pytest's tmp_path is private to root, and the
    server runs as ``postgres``.
    """
    with tempfile.TemporaryDirectory(prefix="base-postgres-") as tmp:
        yield from _postgres(Path(tmp))


def _postgres(base: Path) -> Iterator[str]:
    bindir, run_as, port = postgres_bindir(), _as_postgres_user(), free_port()
    password = secrets.token_urlsafe(16)
    pwfile, data = base / "pwfile", base / "data"
    pwfile.write_text(password)
    if run_as:
        shutil.chown(base, "postgres")
        shutil.chown(pwfile, "postgres")
    _run(
        [
            *run_as,
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "airflow",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
        ]
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=200 -c fsync=off"
    _run([*run_as, bindir / "pg_ctl", "-D", data, "-o", options, "-l", base / "log", "-w", "start"])
    try:
        _run(
            [bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
            env=os.environ | {"PGPASSWORD": password},
        )
        yield f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow"
    finally:
        _run([*run_as, bindir / "pg_ctl", "-D", data, "-m", "fast", "stop"])


@contextmanager
def redis(base: Path, *options: str, port: int | None = None) -> Iterator[str]:
    """A Redis without persistence on ``port`` (default: a free one), with more ``redis-server``
    options (``--appendonly yes`` persists in ``base``); yields its URL."""
    server = shutil.which("redis-server")
    if not server:
        pytest.fail("Redis is not installed: `make test` installs Debian's redis-server package")
    port = port or free_port()
    base.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            base,
            *options,
        ],
        stdout=(base / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != b"PONG\n":
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {(base / 'redis.log').read_text()}")
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)

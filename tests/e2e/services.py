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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Postgres:
    """A running throwaway cluster: its ``airflow`` database's URL, and a restart for the drills."""

    url: str
    data: Path
    log: Path

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut, as a failover would."""
        pg_ctl = postgres_bindir() / "pg_ctl"
        _run([*_as_postgres_user(), pg_ctl, "-D", self.data, "-l", self.log, "-m", "fast", "-w", "restart"])

    def stop(self) -> None:
        """``pg_ctl stop``: the server is gone, as after losing its host (the drills' restore)."""
        _run([*_as_postgres_user(), postgres_bindir() / "pg_ctl", "-D", self.data, "-m", "fast", "stop"])

    def database_url(self, name: str) -> str:
        """Another database on the same server."""
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway cluster with an ``airflow`` database; yields its SQLAlchemy URL."""
    with postgres_server() as server:
        yield server.url


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway cluster with an ``airflow`` database.

    It lives in its own directory under /tmp: pytest's tmp_path is private to root, and the
    server runs as ``postgres``.
    """
    with tempfile.TemporaryDirectory(prefix="base-postgres-") as tmp:
        yield from _postgres(Path(tmp))


def _postgres(base: Path) -> Iterator[Postgres]:
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
    # The options live in the cluster's own config, so a ``pg_ctl restart`` keeps them.
    options = (
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
        "max_connections = 300\nfsync = off\n"
    )
    with (data / "postgresql.conf").open("a") as conf:  # root, or the owner, may write it
        conf.write(options)
    _run([*run_as, bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "start"])
    try:
        _run(
            [bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
            env=os.environ | {"PGPASSWORD": password},
        )
        yield Postgres(
            f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow", data, base / "log"
        )
    finally:
        if (data / "postmaster.pid").exists():  # not stopped already by a drill
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

"""``make run``: the Argo CD and Vault simulators and Airflow 3 (SQLite, LocalExecutor) on 127.0.0.1.

Starts the simulators, migrates the database, creates the ``argocd_default`` and
``vault_default`` connections and the roles and users of config/roles.yaml (FAB auth manager,
as in production), then the api-server, scheduler, dag-processor and triggerer.

``BASE_DEV_EXECUTOR=celery`` runs the production topology instead: Postgres
(``BASE_DEV_DATABASE_URL``), Redis (``BASE_DEV_BROKER_URL``) and CeleryExecutor, with two
schedulers, triggerers and workers (``BASE_DEV_REPLICAS``).

An Airflow service that dies is restarted (up to 3 times, like compose's ``restart: always``);
a simulator dying, or Ctrl-C, stops every process it started, so a second ``make run`` starts
clean. Passwords and keys are generated once per checkout into ``.airflow/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from sandbox.argocd.scenario import load_scenario
from sandbox.vault.scenario import load_scenario as load_vault_scenario

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("BASE_DEV_HOME", ROOT / ".airflow")).resolve()
BIN = Path(sys.executable).parent
PYTHONPATH = f"{ROOT}{os.pathsep}{ROOT / 'plugins'}"  # the tree, and the package Airflow loads as plugins
API_PORT = int(os.environ.get("AIRFLOW_PORT", "8080"))
SIM_PORT = int(os.environ.get("ARGOCD_SIM_PORT", "8081"))
SIM_SCENARIO = os.environ.get("ARGOCD_SIM_SCENARIO", "default.yaml")
VAULT_PORT = int(os.environ.get("VAULT_SIM_PORT", "8200"))
VAULT_SCENARIO = os.environ.get("VAULT_SIM_SCENARIO", "default.yaml")
VAULT_USER = "airflow"
STREAMS_PORT = int(os.environ.get("BASE_STREAMS_REDIS_PORT", "6390"))  # the Redis of the event streams
EXECUTOR = os.environ.get("BASE_DEV_EXECUTOR", "local")
MAX_RESTARTS = 3
# The drills (tests/drills): how many of each service the Celery topology runs (2, as production
# does; 1 shows what a lost host costs without a peer), and which services stay dead when killed.
REPLICAS = int(os.environ.get("BASE_DEV_REPLICAS", "2"))
# Airflow's api-server runs one worker by default; the production topology runs one per core (as
# Airflow advises), each with a database pool as large as its thread pool (40), so a burst of CI
# clients queues for a thread instead of timing out on a connection with a 500
# (tests/drills/test_rest_load.py; docs/reliability.md#load-on-the-rest-doors).
API_WORKERS = ("--workers", "2") if EXECUTOR == "celery" else ()
API_SERVER_ENV = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "10",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "30",
}
NO_RESTART = {name for name in os.environ.get("BASE_DEV_NO_RESTART", "").split(",") if name}
FAB_AUTH_MANAGER = "base_platform.auth.manager.PlatformFabAuthManager"
# Users of config/roles.yaml and the variables their passwords come from.
FAB_USERS = {
    "admin": "BASE_ADMIN_PASSWORD",
    "ops": "BASE_OPS_PASSWORD",
    "dev": "BASE_DEVELOPER_PASSWORD",
    "ds": "BASE_DATA_SCIENTIST_PASSWORD",
    "breaker": "BASE_BREAKER_PASSWORD",  # the service user of the airflow_api connection
}


def airflow_services() -> dict[str, tuple[str, ...]]:
    """What runs besides the api-server, each restartable on its own. The Celery topology runs two
    schedulers (active-active on Postgres row locks), two triggerers (sharing the triggers) and two
    workers, as production does; a second instance serves no logs (the first one's port, and
    every log is a file under the stack's home)."""
    airflow = str(BIN / "airflow")
    services: dict[str, tuple[str, ...]] = {
        name: (airflow, name) for name in ("scheduler", "dag-processor", "triggerer")
    }
    if EXECUTOR != "celery":
        return services
    for number in range(1, REPLICAS + 1):
        suffix, extra = ("", ()) if number == 1 else (f"-{number}", ("--skip-serve-logs",))
        if number > 1:
            services[f"scheduler{suffix}"] = (airflow, "scheduler", *extra)
            services[f"triggerer{suffix}"] = (airflow, "triggerer", *extra)
        hostname = ("--celery-hostname", f"worker-{number}@%h")
        services[f"celery-worker{suffix}"] = (
            airflow,
            "celery",
            "worker",
            "--concurrency",
            "4",
            *hostname,
            *extra,
        )
    return services


def local_secrets() -> dict[str, str]:
    """Generated once per checkout and kept in .airflow/ (git-ignored); new keys are added."""
    from cryptography.fernet import Fernet

    path = HOME / "local-secrets.json"
    data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    makers: dict[str, Callable[[], str]] = {
        "admin_password": lambda: secrets.token_urlsafe(12),
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
        "fernet_key": lambda: Fernet.generate_key().decode(),
        "streams_redis_password": lambda: secrets.token_urlsafe(24),
        **{f"{user}_password": lambda: secrets.token_urlsafe(12) for user in FAB_USERS},
    }
    missing = {key: make() for key, make in makers.items() if key not in data}
    if missing:
        path.write_text(json.dumps(data | missing))
        path.chmod(0o600)
    return data | missing


def auth_env(local: dict[str, str]) -> dict[str, str]:
    """The FAB auth manager with the roles and users of config/roles.yaml, as in production."""
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__API__SECRET_KEY": local["api_secret_key"],
    } | {variable: local[f"{user}_password"] for user, variable in FAB_USERS.items()}


def executor_env() -> dict[str, str]:
    if EXECUTOR == "local":
        return {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
        }
    if EXECUTOR != "celery":
        raise SystemExit(f"BASE_DEV_EXECUTOR must be local or celery, not {EXECUTOR!r}")
    database, broker = os.environ.get("BASE_DEV_DATABASE_URL"), os.environ.get("BASE_DEV_BROKER_URL")
    if not database or not broker:
        raise SystemExit("BASE_DEV_EXECUTOR=celery needs BASE_DEV_DATABASE_URL and BASE_DEV_BROKER_URL")
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
        # Airflow's own database for platform_backup, which a task may reach only as a connection.
        "AIRFLOW_CONN_AIRFLOW_DB": json.dumps(postgres_connection(database)),
    } | CELERY_DURABILITY


# A task message is acknowledged only when its task ends, so a worker killed mid-task leaves it in
# Redis for another; a message not acknowledged within the visibility timeout is delivered again
# (longer than any task may run). Both are Airflow's defaults today, set here so a changed default
# cannot lose tasks unseen (tests/drills). The broker's Redis keeps an AOF (docker-compose.yaml).
CELERY_DURABILITY = {
    "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
}


def airflow_env(local: dict[str, str]) -> dict[str, str]:
    return (
        {
            "ARROW_DEFAULT_MEMORY_POOL": "jemalloc",  # as the image sets it (see the Dockerfile)
            "BASE_PLATFORM_POLL_SECONDS": "2",  # the simulator's apps settle in seconds, not minutes
        }
        | os.environ
        | auth_env(local)
        | executor_env()
        | {
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__CORE__FERNET_KEY": local["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{API_PORT}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(API_PORT),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{API_PORT}",
            "AIRFLOW__API_AUTH__JWT_SECRET": local["jwt_secret"],
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # A scheduler loop with nothing to do sleeps this long (default 1 s); each task of a
            # deploy waits for up to two loops, so this was a second per component (benchmark).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            # A task's supervisor waits up to this long (default 5 s) in select() before it checks
            # whether the task process has exited; measured, half the tasks of a deploy ended 5 s
            # after their last log line. It is also the heartbeat period: one small request a second.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(HOME / "logs"),
            "BASE_PIPELINES_ROOT": str(HOME),
            "AIRFLOW_CONN_ICEBERG_DEFAULT": json.dumps(iceberg_connection()),
            "AIRFLOW_CONN_AIRFLOW_API": json.dumps(airflow_api_connection(local)),
            "PYTHONPATH": str(ROOT),
        }
    )


def airflow_api_connection(local: dict[str, str]) -> dict[str, str]:
    """``airflow_api``: this stack's api-server, as the service user a tripped pipeline pauses as."""
    return {
        "conn_type": "http",
        "host": f"http://127.0.0.1:{API_PORT}",
        "login": "breaker",
        "password": local["breaker_password"],
    }


def unused_port() -> int:
    """A port nothing on 127.0.0.1 listens on now (a launched stack's streams Redis takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, what: str, seconds: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}; see {HOME / 'logs'}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{what} did not answer at {url} within {seconds:.0f} s; see {HOME / 'logs'}")


def wait_dags_parsed(
    api: str, password: str, seconds: float, procs: list[subprocess.Popen[bytes]]
) -> list[str]:
    """Until every file in dags/ has its DAGs registered (or an import error), so a trigger finds them.

    Returns the import errors. The api-server answers before the dag-processor's first pass ends.
    """
    expected = {path.name for path in (ROOT / "dags").glob("*.py")}
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode}; see {HOME / 'logs'}")
        dags = httpx.get(f"{api}/api/v2/dags", params={"limit": 1000}, headers=headers, timeout=30).json()
        errors = httpx.get(f"{api}/api/v2/importErrors", headers=headers, timeout=30).json()
        parsed = {Path(dag["fileloc"]).name for dag in dags["dags"]}
        failed = {Path(error["filename"]).name: error["stack_trace"] for error in errors["import_errors"]}
        if expected <= parsed | set(failed):
            return [f"{name}: {trace.strip().splitlines()[-1]}" for name, trace in sorted(failed.items())]
        time.sleep(1)
    raise SystemExit(f"the DAGs were not all parsed within {seconds:.0f} s; see {HOME / 'logs'}")


class Stack:
    """Children started in their own process groups, all stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[str, ...]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.commands[name] = args
        log = (HOME / "logs" / f"{name}.log").open("ab")
        env = self.env | (API_SERVER_ENV if name == "api-server" and EXECUTOR == "celery" else {})
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        print(f"  started {name:<14} pid {proc.pid:<7} log {HOME / 'logs' / name}.log", flush=True)
        return proc

    def supervise(self, restartable: set[str]) -> str:
        """Block while everything runs; restart a dead restartable service, else return its name."""
        restarts: dict[str, int] = {}
        while True:
            time.sleep(1)
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                end_group(proc)
                if name in NO_RESTART:
                    print(f"{name} exited with {proc.returncode}; not restarted (BASE_DEV_NO_RESTART)")
                    del self.procs[name]
                    continue
                restarts[name] = restarts.get(name, 0) + 1
                if name not in restartable or restarts[name] > MAX_RESTARTS:
                    return name
                print(f"{name} exited with {proc.returncode}; restarting ({restarts[name]}/{MAX_RESTARTS})")
                self.start(name, *self.commands[name])

    def stop(self) -> None:
        """SIGTERM each service's group, give them 20 s, then end each group: a child that
        outlives its service (a Celery worker's serve-logs) would hold its port."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            end_group(proc)
            proc.wait()


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a service's process group; its leader may be gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def airflow(env: dict[str, str], *args: str, check: bool = True) -> None:
    subprocess.run(
        [str(BIN / "airflow"), *args],
        env=env,
        cwd=ROOT,
        check=check,
        stdout=subprocess.DEVNULL,
        stderr=None if check else subprocess.DEVNULL,
    )


@dataclass
class Launched:
    """A stack started in the background by :func:`launch`, for tests and benchmarks."""

    proc: subprocess.Popen[str]
    api_port: int
    home: Path
    streams_port: int = STREAMS_PORT
    password: str = ""
    child_pids: list[int] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # the latest pid of each service
    output: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def read_until(self, pattern: str, seconds: float) -> re.Match[str]:
        """Read the stack's output until a line matches; fail with that output otherwise."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("dev stack exited:\n" + "".join(self.output))
            self.output.append(line)
            if started := re.search(r"started (\S+)\s+pid (\d+)", line):
                self.child_pids.append(int(started.group(2)))
                self.pids[started.group(1)] = int(started.group(2))
            if login := re.match(r"Login:\s+admin / (\S+)", line):
                self.password = login.group(1)
            if match := re.search(pattern, line):
                return match
        raise RuntimeError(f"no line matched {pattern!r} within {seconds:.0f} s:\n" + "".join(self.output))


def launch(
    home: Path, api_port: int, sim_port: int, vault_port: int, extra_env: Mapping[str, str] | None = None
) -> Launched:
    """Start this script in its own session, with a clean Airflow environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_PORT": str(api_port),
        "ARGOCD_SIM_PORT": str(sim_port),
        "VAULT_SIM_PORT": str(vault_port),
        "BASE_STREAMS_REDIS_PORT": str(streams_port := unused_port()),
        "BASE_DEV_HOME": str(home),
        "PYTHONPATH": PYTHONPATH,
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve())],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Launched(proc, api_port, home, streams_port=streams_port)


def wait_ready(stack: Launched, seconds: float = 240) -> Launched:
    """Read the stack's output until it says it is ready (after printing the login)."""
    stack.read_until("Press Ctrl-C", seconds)
    return stack


@contextlib.contextmanager
def running(stack: Launched, seconds: float = 240) -> Iterator[Launched]:
    """The stack once ready; stopped on the way out however the block ends, as Ctrl-C stops it
    (SIGINT to its session), and waited for."""
    try:
        yield wait_ready(stack, seconds)
    finally:
        if stack.proc.poll() is None:
            os.killpg(stack.proc.pid, signal.SIGINT)
        stack.proc.wait(timeout=90)


def iceberg_connection() -> dict[str, object]:
    """``iceberg_default``: SQLite under the stack's home, or the Postgres database of
    ``BASE_DEV_ICEBERG_URL`` (the Celery topology, as in production).

    An environment variable, as in the compose stack, not a row in the metadata DB: outside a
    task or the API server (``airflow-init``'s catalog step) Airflow reads no connection there.
    """
    url = os.environ.get("BASE_DEV_ICEBERG_URL")
    if not url:
        return sqlite_iceberg_connection(HOME / "iceberg.db", HOME / "warehouse")
    return postgres_iceberg_connection(url, HOME / "warehouse")


def postgres_connection(url: str) -> dict[str, object]:
    """A ``postgres`` connection to the database of a SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {
        "conn_type": "postgres",
        "host": parsed.host,
        "port": parsed.port,
        "login": parsed.username,
        "password": parsed.password,
        "schema": parsed.database,
    }


def sqlite_iceberg_connection(database: Path, warehouse: Path) -> dict[str, object]:
    """A SQLite Iceberg catalog and a local warehouse (``make run``, tests, the benchmark)."""
    return {"conn_type": "sqlite", "host": str(database), "extra": json.dumps({"warehouse": str(warehouse)})}


def postgres_iceberg_connection(url: str, warehouse: Path) -> dict[str, object]:
    """A Postgres Iceberg catalog and a local warehouse (the Celery topology, the restore drill)."""
    return postgres_connection(url) | {"extra": json.dumps({"warehouse": str(warehouse)})}


def sandbox_connections() -> dict[str, dict[str, object]]:
    """``argocd_default`` and ``vault_default``, pointing at the simulators (sandbox credentials)."""
    vault_password = load_vault_scenario(VAULT_SCENARIO).users[VAULT_USER].password
    return {
        "argocd_default": {
            "conn_type": "argocd",
            "host": f"http://127.0.0.1:{SIM_PORT}",
            "password": load_scenario(SIM_SCENARIO).tokens[0],
        },
        "vault_default": {
            "conn_type": "vault",
            "host": "127.0.0.1",
            "port": VAULT_PORT,
            "schema": "secret",
            "login": VAULT_USER,
            "password": vault_password,
            "extra": json.dumps({"auth_type": "userpass", "kv_engine_version": 2}),
        },
    }


def streams_connection(local: dict[str, str]) -> dict[str, object]:
    """``redis_default``: the Redis that holds the event streams (``card_events``)."""
    return {
        "conn_type": "redis",
        "host": "127.0.0.1",
        "port": STREAMS_PORT,
        "password": local["streams_redis_password"],
    }


def start_streams_redis(stack: Stack, local: dict[str, str]) -> None:
    """A Redis for the streams, with AOF (fsync on every write), as production runs it; its password
    is in a config file of mode 0600, not on the command line."""
    folder = HOME / "streams-redis"
    folder.mkdir(exist_ok=True)
    config = folder / "redis.conf"
    config.write_text(
        f"port {STREAMS_PORT}\nbind 127.0.0.1\ndir {folder}\nappendonly yes\nappendfsync always\n"
        f'save ""\nrequirepass {local["streams_redis_password"]}\n'
    )
    config.chmod(0o600)
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is missing: `make run` installs Debian's redis-server package")
    stack.start("streams-redis", server, str(config))


MEDIA_SAMPLES = {  # media kind -> the dataset whose drop folder gets sample files
    "document": "documents",
    "image": "images",
    "geojson": "parcels",
    "timeseries": "sensor_series",
}


def sample_data() -> Path:
    """Generated transactions for ``pipeline_transactions``, the merchants reference of the card
    streams, and files of each media kind (once; delete the folders for new ones)."""
    incoming = HOME / "data" / "transactions" / "incoming"
    if not incoming.exists():
        from benchmarks.datagen import generate

        summary = generate(20_000, "csv", 0.02, incoming, files=2)
        print(f"  generated {summary.rows} sample transactions ({summary.corrupt} corrupt) in {incoming}")
    merchants = HOME / "data" / "merchants" / "incoming"
    if not merchants.exists():
        from benchmarks.streamgen import write_merchants

        write_merchants(merchants / "merchants.csv")
    for kind, dataset in MEDIA_SAMPLES.items():
        folder = HOME / "data" / dataset / "incoming"
        if not folder.exists():
            from benchmarks.mediagen import generate as generate_media

            made = generate_media(kind, 50, 0.04, folder)
            print(f"  generated {made['files']} {kind} files ({made['quarantined']} unreadable) in {folder}")
    return incoming


def init_step(env: dict[str, str], module: str, log_name: str) -> None:
    """One of airflow-init's steps (``python -m <module>``), its output in the stack's logs.

    ``base_platform.auth.sync`` makes the roles and users of config/roles.yaml (it names roles,
    never passwords); ``base_platform.pipelines.data_storage.tables`` the curated datasets' Iceberg catalog.
    """
    subprocess.run(
        [str(BIN / "python"), "-m", module],
        env=env | {"PYTHONPATH": PYTHONPATH},
        cwd=ROOT,
        check=True,
        stdout=(HOME / "logs" / log_name).open("ab"),
        stderr=subprocess.STDOUT,
    )


def start_simulators(stack: Stack) -> None:
    python = str(BIN / "python")
    argocd = stack.start(
        "argocd-sim", python, "-m", "sandbox.argocd", "--port", str(SIM_PORT), "--scenario", SIM_SCENARIO
    )
    vault = stack.start(
        "vault-sim", python, "-m", "sandbox.vault", "--port", str(VAULT_PORT), "--scenario", VAULT_SCENARIO
    )
    wait_http(f"http://127.0.0.1:{SIM_PORT}/healthz", "Argo CD simulator", 30, [argocd])
    wait_http(f"http://127.0.0.1:{VAULT_PORT}/sandbox/healthz", "Vault simulator", 30, [vault])


def main() -> int:
    for port in (API_PORT, SIM_PORT, VAULT_PORT, STREAMS_PORT):
        if not port_free(port):
            print(f"Port {port} on 127.0.0.1 is in use (is another `make run` still up?).", file=sys.stderr)
            return 1
    (HOME / "logs").mkdir(parents=True, exist_ok=True)
    local = local_secrets()
    env = airflow_env(local)
    stack = Stack(env)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Set explicitly: a shell that starts us in the background leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        print("Starting the Argo CD and Vault SIMULATORS and Airflow on 127.0.0.1 ...", flush=True)
        start_simulators(stack)
        start_streams_redis(stack, local)
        airflow(env, "db", "migrate")
        connections = HOME / "sandbox-connections.json"
        streams = {"redis_default": streams_connection(local)}
        connections.write_text(json.dumps(sandbox_connections() | streams))
        connections.chmod(0o600)
        airflow(env, "connections", "import", "--overwrite", str(connections))
        init_step(env, "base_platform.pipelines.data_storage.tables", "iceberg-catalog.log")
        sample_data()
        init_step(env, "base_platform.auth.sync", "sync-roles.log")
        services = airflow_services()
        services["api-server"] = (
            str(BIN / "airflow"),
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            str(API_PORT),
            *API_WORKERS,
        )
        for name, command in services.items():
            stack.start(name, *command)
        wait_http(
            f"http://127.0.0.1:{API_PORT}/api/v2/monitor/health",
            "Airflow api-server",
            180,
            [stack.procs["api-server"]],
        )
        api = f"http://127.0.0.1:{API_PORT}"
        for error in wait_dags_parsed(api, local["admin_password"], 240, [stack.procs["dag-processor"]]):
            print(f"DAG import error: {error}", file=sys.stderr, flush=True)
        others = ", ".join(user for user in FAB_USERS if user != "admin")
        print(
            f"\nAirflow UI:  http://127.0.0.1:{API_PORT}\nLogin:       admin / {local['admin_password']}\n"
            f"Other users: {others} (roles: config/roles.yaml; passwords: {HOME / 'local-secrets.json'})\n"
            f"Argo CD simulator: http://127.0.0.1:{SIM_PORT} (connection argocd_default)\n"
            f"Vault simulator:   http://127.0.0.1:{VAULT_PORT} (connection vault_default)\n"
            f"Streams Redis:     127.0.0.1:{STREAMS_PORT} (connection redis_default; "
            "python -m benchmarks.streamgen --rate 1000 fills card_events)\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        dead = stack.supervise(restartable={*services, "streams-redis"})  # Redis restarts from its AOF
        print(f"{dead} exited; stopping the rest. See {HOME / 'logs'}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    finally:
        stack.stop()
        print("All processes stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""platformctl: drive the platform DAGs from CI over Airflow's REST API, and act on the verdict.

    platformctl deploy --env staging --waves core,shared --revision SHA --wait --timeout 30m
    platformctl validate --scope security --wait
    platformctl drift --wait
    platformctl status RUN_ID [--dag platform_deploy]
    platformctl backup --to s3://bucket/prefix [--keep 14]
    platformctl restore --from s3://bucket/prefix [--backup latest]

Reads ``AIRFLOW_URL`` (default http://127.0.0.1:8080), ``AIRFLOW_USERNAME`` (default admin)
and ``AIRFLOW_PASSWORD``. Exit codes: 0 success, 1 failure (the run failed, or its verdict
did), 2 timeout, 3 bad arguments or an API error. Arguments are checked before any call.

``backup`` and ``restore`` talk to the databases, not the API: they run where Airflow's
configuration is (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ``AIRFLOW__CORE__FERNET_KEY``,
``AIRFLOW_CONN_ICEBERG_DEFAULT``), with the plugins importable (``PYTHONPATH=plugins`` in a
checkout, or the Airflow image). A restore goes onto a stopped Airflow whose database was just created.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx

WAVES = ("core", "shared", "orchestration", "apps", "base")
ENVIRONMENTS = ("dev", "staging", "prod")
SCOPES = ("all", "core", "shared", "orchestration", "apps", "base", "security")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
DURATION = re.compile(r"^(\d+)(s|m|h)?$")
FINAL = {"success": 0, "failed": 1}
OK, FAILED, TIMEOUT, USAGE = 0, 1, 2, 3
ATTEMPTS = 4  # each call, with 2, 4 and 8 s between tries


class ApiError(Exception):
    """Airflow refused a call; the message is the server's."""


# ---- arguments ----------------------------------------------------------------------------------
def duration(text: str) -> float:
    match = DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m or 1h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def waves(text: str) -> list[str]:
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WAVES]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"waves must be a comma list of {', '.join(WAVES)}; got {text!r}")
    return chosen


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def revision(text: str) -> str:
    if not REVISION.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a git revision (branch, tag or SHA)")
    return text


class _Parser(argparse.ArgumentParser):
    """Bad arguments exit 3: argparse's own 2 would read as a timeout."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="platformctl", description=(__doc__ or "").split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    def waiting(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--wait", action="store_true", help="wait for the verdict")
        sub.add_argument("--timeout", type=duration, default=duration("30m"), help="with --wait (30m)")

    deploy = commands.add_parser("deploy", help="trigger platform_deploy")
    deploy.add_argument("--env", choices=ENVIRONMENTS, required=True)
    deploy.add_argument("--waves", type=waves, default=list(WAVES))
    deploy.add_argument("--components", type=lambda t: [c for c in t.split(",") if c], default=[])
    deploy.add_argument("--revision", type=revision, default=None, help="default: the overlay's")
    deploy.add_argument("--dry-run", action="store_true")
    waiting(deploy)
    validate = commands.add_parser("validate", help="trigger platform_validate")
    validate.add_argument("--env", choices=ENVIRONMENTS, default="dev")
    validate.add_argument("--scope", choices=SCOPES, default="all")
    waiting(validate)
    drift = commands.add_parser("drift", help="trigger platform_drift (exit 1 when something drifted)")
    drift.add_argument("--env", choices=ENVIRONMENTS, default="dev")
    drift.add_argument("--no-heal", action="store_true", help="report only, even where policy heals")
    waiting(drift)
    status = commands.add_parser("status", help="the state and verdict of a run")
    status.add_argument("run_id")
    status.add_argument(
        "--dag", default="platform_deploy", choices=["platform_deploy", "platform_validate", "platform_drift"]
    )
    backup = commands.add_parser("backup", help="dump the metadata and catalog databases to a location")
    backup.add_argument("--to", required=True, help="s3://bucket/prefix or a folder")
    backup.add_argument("--keep", type=count, default=0, help="then delete all but the newest N backups")
    backup.add_argument("--conn-id", default="aws_default", help="the amazon connection of s3://")
    restore = commands.add_parser("restore", help="restore a backup onto a new, stopped Airflow")
    restore.add_argument("--from", dest="source", required=True, help="s3://bucket/prefix or a folder")
    restore.add_argument("--backup", default="latest", help="a backup id, or latest")
    restore.add_argument("--conn-id", default="aws_default", help="the amazon connection of s3://")
    return root


# ---- backup and restore: the databases, not the API ----------------------------------------------
def state(args: argparse.Namespace) -> int:
    """Back up or restore the orchestrator's state; prints the manifest or what was restored."""
    try:
        from base_platform.lifecycle import backup
    except ImportError:
        print("platformctl: backup and restore need the plugins: PYTHONPATH=plugins", file=sys.stderr)
        return USAGE
    try:
        databases, key = backup.orchestrator_databases(), backup.fernet_key()
        if args.command == "backup":
            store = backup.Store.of(args.to, args.conn_id)
            manifest = backup.backup(databases, store, key)
            pruned = backup.prune(store, args.keep) if args.keep else []
            print(json.dumps(manifest | {"pruned": pruned}, indent=2))
            return OK
        restored = backup.restore(backup.Store.of(args.source, args.conn_id), args.backup, databases, key)
        if any(d.name == "iceberg" for d in databases):
            from base_platform.pipelines.data_storage.tables import catalog

            restored["rolled_forward"] = backup.roll_forward(catalog())
        print(json.dumps(restored, indent=2))
        return OK
    except backup.BackupError as exc:
        print(f"platformctl: {exc}", file=sys.stderr)
        return FAILED


# ---- the API ------------------------------------------------------------------------------------
class Airflow:
    """Airflow 3's REST API with a bearer token from ``/auth/token``.

    Every call is safe to repeat (the trigger names its own run), so a transport error or a 5xx
    is tried again, up to ``ATTEMPTS`` times with backoff: a busy api-server must not fail a CI job.
    """

    def __init__(self, url: str, username: str, password: str, **client_options: Any) -> None:
        """``client_options`` go to httpx.Client (the load drill times requests with event hooks)."""
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30, **client_options)
        answer = self._send("POST", "/auth/token", json={"username": username, "password": password})
        token = self._json(answer).get("access_token")
        self.client.headers["Authorization"] = f"Bearer {token}"

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, ATTEMPTS):
            try:
                answer = self.client.request(method, path, **kwargs)
                if answer.status_code < 500:
                    return answer
            except httpx.TransportError:
                pass
            pause_for(2.0**attempt)
        return self.client.request(method, path, **kwargs)  # the last try's 5xx or error is the caller's

    @staticmethod
    def _json(answer: httpx.Response) -> dict[str, Any]:
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("detail", answer.text)
            except ValueError:
                detail = answer.text
            raise ApiError(
                f"{answer.request.method} {answer.request.url.path}: HTTP {answer.status_code}: {detail}"
            )
        body: dict[str, Any] = answer.json()
        return body

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause the DAG if it is paused (a read: fifty clients writing one DAG's row queue on
        its lock), then trigger a run under a run id of our own, so a repeated POST is harmless:
        its 409 says the first one made the run."""
        if self._json(self._send("GET", f"/api/v2/dags/{dag_id}")).get("is_paused", True):
            self._json(self._send("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}))
        run_id = f"platformctl__{datetime.now(UTC):%Y%m%dT%H%M%S}__{secrets.token_hex(4)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        answer = self._send("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        if answer.status_code != 409:
            self._json(answer)
        return run_id

    def state(self, dag_id: str, run_id: str, missing: str | None = None) -> str:
        """The run's state; ``missing`` if given and the run is not there (yet: the api-server may
        answer a trigger a moment before its transaction is visible to the next request)."""
        answer = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if answer.status_code == 404 and missing is not None:
            return missing
        return str(self._json(answer)["state"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        answer = self._send("GET", path)
        return None if answer.status_code == 404 else self._json(answer).get("value")


def pause_for(seconds: float) -> None:
    time.sleep(seconds)


def wait(
    airflow: Airflow, dag_id: str, run_id: str, timeout: float, sleep: Callable[[float], None] | None = None
) -> str | None:
    """Poll with backoff (2 s doubling to 10 s) until the run ends; None on timeout.

    The cap bounds how late a finished run is noticed; a poll is one cheap GET.
    """
    sleep = sleep or pause_for
    deadline, pause = time.monotonic() + timeout, 2.0
    while True:
        state = airflow.state(dag_id, run_id, missing="queued")
        if state in FINAL:
            return state
        if time.monotonic() + pause > deadline:
            return None
        sleep(pause)
        pause = min(pause * 2, 10.0)


# ---- verdicts -----------------------------------------------------------------------------------
def print_deploy(airflow: Airflow, run_id: str) -> bool:
    report = airflow.xcom("platform_deploy", run_id, "summary", "report")
    if not report:
        print("no summary report (the run was refused before deploying; see its plan task)")
        return False
    for wave, row in report["waves"].items():
        print(f"wave {wave:<14} {'ok' if row['ok'] else 'FAILED':<7} gate={row['gate']}")
    for row in report["components"]:
        print(f"  {row['component']:<30} {row['verdict']:<32} sync={row['sync']} health={row['health']}")
    return bool(report["ok"])


def print_validate(airflow: Airflow, run_id: str) -> bool:
    print(airflow.xcom("platform_validate", run_id, "report", "report_md") or "no report")
    result = airflow.xcom("platform_validate", run_id, "report") or {}
    return result.get("verdict") in {"healthy", "degraded"}


def print_drift(airflow: Airflow, run_id: str) -> bool:
    report = airflow.xcom("platform_drift", run_id, "publish") or {}
    print(airflow.xcom("platform_drift", run_id, "publish", "report_md") or "no report")
    return report.get("drifted") is False


VERDICTS: dict[str, Callable[[Airflow, str], bool]] = {
    "platform_deploy": print_deploy,
    "platform_validate": print_validate,
    "platform_drift": print_drift,
}


def request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.command == "deploy":
        conf = {"environment": args.env, "waves": args.waves, "components": args.components}
        return "platform_deploy", conf | {"target_revision": args.revision or "", "dry_run": args.dry_run}
    if args.command == "validate":
        return "platform_validate", {"environment": args.env, "scope": args.scope}
    return "platform_drift", {"environment": args.env, "heal": not args.no_heal}


def run(args: argparse.Namespace, airflow: Airflow) -> int:
    if args.command == "status":
        dag_id, run_id = args.dag, args.run_id
        state = airflow.state(dag_id, run_id)
        print(f"{dag_id} {run_id}: {state}")
        if state not in FINAL:
            return TIMEOUT
    else:
        dag_id, conf = request(args)
        run_id = airflow.trigger(dag_id, conf)
        print(f"{dag_id} {run_id}: triggered", flush=True)
        if not args.wait:
            return OK
        final = wait(airflow, dag_id, run_id, args.timeout)
        if final is None:
            print(f"{dag_id} {run_id}: still running after {args.timeout:.0f} s", file=sys.stderr)
            return TIMEOUT
        state = final
        print(f"{dag_id} {run_id}: {state}")
    good = VERDICTS[dag_id](airflow, run_id)
    return OK if state == "success" and good else FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 3 with usage on bad arguments, before any call
    if args.command in ("backup", "restore"):
        return state(args)
    password = os.environ.get("AIRFLOW_PASSWORD")
    if not password:
        print("platformctl: set AIRFLOW_PASSWORD", file=sys.stderr)
        return USAGE
    url = os.environ.get("AIRFLOW_URL", "http://127.0.0.1:8080")
    try:
        return run(args, Airflow(url, os.environ.get("AIRFLOW_USERNAME", "admin"), password))
    except (ApiError, httpx.HTTPError) as exc:
        print(f"platformctl: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())

"""Ingest throughput: the pipeline engine against honest baselines on the same CSV files, in one run.

- ours: ``engine.discover`` → ``engine.process_shard`` per shard (two at a time, like two
  worker slots) → ``engine.commit``, exactly as the DAG's tasks call them, every stage on, into
  an Iceberg table (a SQLite catalog of the contender's own);
- ours before: the same calls into the engine of ``BENCH_BEFORE`` (a commit; default the last
  commit before curated datasets became Iceberg tables; ``git archive`` of its ``plugins/``),
  which committed with JSON manifests; ``BENCH_BEFORE=<the commit before a change>`` measures
  the change): the engine line must stay within 10% of it, and each prints its commit's seconds;
- DuckDB, the same work: every cast and contract check, every quality rule of the spec
  (uniqueness across the run included), UTF-8 validation (DuckDB's reader rejects a bad line;
  its rejects are quarantined), masking, HMAC-SHA256 in its real form (the key's inner and
  outer pads, two SHA-256 per value), the quarantine written with reasons and its protected
  columns HMAC'd too, the same partitioning. What it cannot express: sealing the quarantined
  raw record with AES-GCM, so its quarantine holds less than ours;
- Polars ``scan_csv`` → ``sink_parquet`` (zstd): no checks, a reference line only;
- Arrow I/O: the engine's own reader into a zstd Parquet file per input, two at a time, no
  checks: what any engine built on pyarrow's reader and writer costs before it checks a row;
- the pipeline through Airflow: ``pipeline_transactions`` on ``make run``'s stack (LocalExecutor,
  2 slots), triggered over REST on the same files, timed by the DAG run's own dates.

Contenders run interleaved for ``BENCH_ROUNDS`` rounds (default 3), each in a fresh process
that times itself once the runtime it runs in is loaded (for ours: Airflow's task SDK, as in
every task process), with no memory limit for any; peak memory is the sum over the
contender's whole process tree, sampled. Every contender's stored and quarantined rows are
read back from its output and checked against the generator's counts: a mismatch exits
non-zero. Prints medians, ranges and PASS or FAIL per target. ``BENCH_GB`` (default 2) and
``BENCH_FILES`` (default 8) set the input.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT / "plugins"), str(ROOT)):  # appended: ours-before puts the earlier engine first
    if _path not in sys.path:
        sys.path.append(_path)

from benchmarks import api_load  # noqa: E402  (after sys.path is set)

if TYPE_CHECKING:
    from base_platform.pipelines.run_records import ShardResult

KEY = b"benchmark-key"
TARGETS = {
    "airflow_gb_per_hour": 300.0,
    "vs_duckdb": 1.5,
    "vs_arrow_io": 0.45,
    "peak_rss_gb": 1.5,
    "vs_before": 0.9,  # a change to the engine (BENCH_BEFORE=<the commit before it>) costs it at most 10%
}
BYTES_PER_ROW = 172  # of the generated CSV, measured


def transactions() -> Any:
    """The transactions pipeline from whichever engine is first on ``sys.path`` (the earlier one
    has no ``pipeline_named``)."""
    from base_platform.pipelines.spec import load_pipelines

    return next(p for p in load_pipelines() if p.spec.name == "transactions")


def _shard(args: tuple[dict[str, Any], str, str]) -> ShardResult:
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import Shard

    shard, target, run_key = args
    return engine.process_shard(transactions(), Shard.from_json(shard), run_key, target, KEY)


def ours(source: str, target: str) -> dict[str, Any]:
    """Also ``ours-before``: its process finds the earlier engine first on ``sys.path``."""
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import CommitRequest

    pipeline = transactions()
    shards = engine.discover(pipeline, source, target, full_refresh=True)
    # fresh processes, as each task is: a forked worker would count the parent's pages in its RSS
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_shard, [(s.to_json(), target, "bench") for s in shards]))
    started = time.perf_counter()
    request = CommitRequest("bench", tuple(results), target, {"start": None, "end": None}, True, key=KEY)
    record = engine.commit(pipeline, request)
    return {"stage_seconds": dict(record.stage_seconds), "commit_seconds": time.perf_counter() - started}


def _copy_file(paths: tuple[str, str]) -> int:
    import pyarrow.parquet as pq

    from base_platform.pipelines.data_ingestion import decoding
    from base_platform.pipelines.data_ingestion.sources.files import file_source

    source_file, target_file = paths
    pipeline = transactions()
    names = list(pipeline.contract.names)
    rows = 0
    with pq.ParquetWriter(target_file, decoding.raw_schema(names), compression="zstd") as writer:
        for raw in decoding.read_uri(source_file, names, file_source(pipeline)):
            writer.write_batch(raw.batch)
            rows += raw.batch.num_rows
    return rows


def arrow_io(source: str, target: str) -> dict[str, Any]:
    Path(target).mkdir(parents=True, exist_ok=True)
    pairs = [(str(path), f"{target}/{path.stem}.parquet") for path in sorted(Path(source).glob("*.csv"))]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return {"rows": sum(pool.map(_copy_file, pairs))}


def polars_baseline(source: str, target: str) -> dict[str, Any]:
    import polars as pl

    Path(target).mkdir(parents=True, exist_ok=True)
    pl.scan_csv(f"{source}/*.csv", infer_schema=False, encoding="utf8-lossy").sink_parquet(
        f"{target}/data.parquet", compression="zstd"
    )
    return {}


def _hmac_sql(column: str, key: bytes) -> str:
    """HMAC-SHA256 as RFC 2104 defines it: SHA-256(key ^ opad || SHA-256(key ^ ipad || message))."""
    block = key.ljust(64, b"\0")
    ipad, opad = bytes(b ^ 0x36 for b in block).hex(), bytes(b ^ 0x5C for b in block).hex()
    inner = f"unhex(sha256(unhex('{ipad}') || encode({column})))"
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE unhex(sha256(unhex('{opad}') || {inner})) END"


def _reasons_sql() -> str:
    """Every contract check and quality rule of the spec, one reason each, as ours words them."""
    from base_platform.pipelines.spec import Freshness, Range, Regex

    pipeline = transactions()
    checks = []
    for column in pipeline.contract.columns:
        name = column.name
        if not column.nullable:
            checks.append(f"CASE WHEN {name} IS NULL OR {name} = '' THEN '{name}: missing' END")
        if column.max_length:
            checks.append(f"CASE WHEN length({name}) > {column.max_length} THEN '{name}: too long' END")
        if column.pattern:
            checks.append(
                f"CASE WHEN NOT regexp_full_match({name}, '{column.pattern}') THEN '{name}: pattern' END"
            )
        if column.allowed:
            values = ", ".join(f"'{v}'" for v in column.allowed)
            checks.append(f"CASE WHEN {name} NOT IN ({values}) THEN '{name}: not allowed' END")
    checks.append("CASE WHEN event_time <> '' AND ts IS NULL THEN 'event_time: not a timestamp' END")
    checks.append("CASE WHEN amount <> '' AND amt IS NULL THEN 'amount: not a decimal' END")
    for rule in pipeline.spec.quality:
        if isinstance(rule, Range):
            checks.append(f"CASE WHEN amt < {rule.min} OR amt > {rule.max} THEN '{rule.column}: range' END")
        elif isinstance(rule, Regex):
            pattern = rule.pattern.replace("'", "''")
            checks.append(
                f"CASE WHEN NOT regexp_full_match({rule.column}, '{pattern}') THEN '{rule.column}: regex' END"
            )
        elif not isinstance(rule, Freshness) and rule.rule == "accepted_values":
            values = ", ".join(f"'{v}'" for v in rule.values)
            checks.append(f"CASE WHEN {rule.column} NOT IN ({values}) THEN '{rule.column}: not accepted' END")
    checks.append("CASE WHEN transaction_id <> '' AND nth > 1 THEN 'transaction_id: duplicate' END")
    return "concat_ws('; ', " + ", ".join(checks) + ")"


def duckdb_baseline(source: str, target: str) -> dict[str, Any]:
    import duckdb

    Path(target, "_quarantine").mkdir(parents=True, exist_ok=True)
    email, phone = _hmac_sql("customer_email", KEY), _hmac_sql("customer_phone", KEY)
    masked = (
        "CASE WHEN card_last4 IS NULL THEN NULL "
        "ELSE repeat('*', greatest(length(card_last4) - 2, 0)) || right(card_last4, 2) END"
    )
    with duckdb.connect() as con:
        con.execute(f"""
            CREATE TEMP TABLE checked AS
            WITH raw AS (
              SELECT *, row_number() OVER () AS line
              FROM read_csv('{source}/*.csv', all_varchar=true, header=true, filename=true,
                            store_rejects=true, rejects_table='rejects', rejects_scan='scans')
            ), typed AS (
              SELECT *, TRY_STRPTIME(event_time, '%Y-%m-%dT%H:%M:%SZ') AS ts,
                     TRY_CAST(amount AS DECIMAL(18,2)) AS amt,
                     CASE WHEN transaction_id <> '' THEN
                       row_number() OVER (PARTITION BY transaction_id ORDER BY filename, line) END AS nth
              FROM raw
            )
            SELECT *, {_reasons_sql()} AS reason FROM typed
        """)  # noqa: S608 - this benchmark's own folders and the spec's own values
        con.execute(f"""
            COPY (
              SELECT transaction_id, account_id, ts AS event_time, amt AS amount, currency, merchant,
                     merchant_country, channel, {email} AS customer_email, {phone} AS customer_phone,
                     {masked} AS card_last4, status, memo, CAST(ts AS DATE) AS event_date
              FROM checked WHERE reason = ''
            ) TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)
        """)  # noqa: S608
        con.execute(f"""
            COPY (
              SELECT transaction_id, account_id, event_time, amount, currency, merchant, merchant_country,
                     channel, {email} AS customer_email, {phone} AS customer_phone, {masked} AS card_last4,
                     status, memo, NULL AS _raw, reason AS _reason, filename AS _source
              FROM checked WHERE reason <> ''
              UNION ALL
              SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                     NULL AS _raw, 'line: ' || error_type AS _reason, CAST(file_id AS VARCHAR)
              FROM rejects
            ) TO '{target}/_quarantine/rows.parquet' (FORMAT parquet, COMPRESSION zstd)
        """)  # noqa: S608
    return {}


def stored_and_quarantined(name: str, target: str) -> tuple[int, int]:
    """Read back from the contender's output: rows stored, rows quarantined."""
    import pyarrow.parquet as pq

    quarantine = Path(target, "_quarantine")
    quarantined = sum(pq.ParquetFile(f).metadata.num_rows for f in quarantine.rglob("*.parquet"))
    data = [f for f in Path(target).rglob("*.parquet") if "_quarantine" not in f.parts]
    iceberg = name == "ours" or (name == "ours-before" and not Path(target, "_manifests").exists())
    if iceberg:  # a table: read through its catalog
        from base_platform.pipelines.data_storage import tables

        os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"] = catalog_connection(target)
        table = tables.load("transactions")
        stored = table.scan().count() if table else 0
    elif name == "ours-before":  # committed files are listed in its JSON manifests
        manifests = [f for f in Path(target, "_manifests").glob("*.json") if not f.name.startswith("_")]
        stored = sum(f["rows"] for m in manifests for f in json.loads(m.read_text())["files"])
    else:
        stored = sum(pq.ParquetFile(f).metadata.num_rows for f in data)
    return stored, quarantined


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process below it, from /proc."""
    pids, total, page = [root], 0, os.sysconf("SC_PAGE_SIZE")
    while pids:
        pid = pids.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            for task in Path(f"/proc/{pid}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def catalog_connection(target: str) -> str:
    """A contender's own Iceberg catalog, beside its output, gone with it."""
    from scripts.dev_stack import sqlite_iceberg_connection

    catalog = Path(f"{target}.catalog")
    return json.dumps(sqlite_iceberg_connection(catalog / "iceberg.db", catalog / "warehouse"))


def before_tree(tmp: Path) -> Path:
    """``plugins/`` (and its ``config/``) of the engine before Iceberg, from git, for ``ours-before``."""
    folder = tmp / "before"
    folder.mkdir()
    import io
    import tarfile

    git = shutil.which("git") or "git"
    revision = os.environ.get("BENCH_BEFORE", BEFORE)
    archive = subprocess.run(
        [git, "-C", str(ROOT), "archive", revision, "plugins", "config"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "plugins"


def measure(name: str, source: str, target: str, before: Path | None = None) -> dict[str, Any]:
    """Run one contender in a fresh process; its seconds and the peak of its tree's summed RSS.

    The clock starts once the process holds the runtime the contender runs in: for our engine,
    before and after, Airflow's task SDK, which every task process has loaded before its task
    starts. Everything the contender itself imports (pyiceberg, DuckDB, Polars) is on the clock.
    """
    contender = "ours" if name == "ours-before" else name
    first = [str(before)] if name == "ours-before" and before else []
    runtime = "import airflow.sdk\n" if contender == "ours" else ""
    code = (
        f"import json, sys, time; sys.path[:0] = {[*first, str(ROOT)]!r}\n{runtime}"
        "from benchmarks.ingest_throughput import CONTENDERS\n"
        "started = time.perf_counter()\n"
        f"result = CONTENDERS[{contender!r}]({source!r}, {target!r})\n"
        "print(json.dumps(result | {'seconds': time.perf_counter() - started}))\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(f"{target}.catalog", ignore_errors=True)
    env = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"} | os.environ  # as the image and `make run` set it
    env["AIRFLOW_CONN_ICEBERG_DEFAULT"] = catalog_connection(target)
    if first:  # the shards' spawned processes find the earlier engine too
        env["PYTHONPATH"] = os.pathsep.join([*first, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result | {"peak_rss": peak}


CONTENDERS = {
    "ours": ours,
    "ours-before": ours,
    "duckdb": duckdb_baseline,
    "polars": polars_baseline,
    "arrow-io": arrow_io,
}
BEFORE = "13f1f46"  # the last commit whose datasets were Parquet folders with JSON manifests


def through_airflow(source: Path, tmp: Path) -> dict[str, Any]:
    """pipeline_transactions on make run's stack, LocalExecutor with 2 slots, triggered over REST;
    then the datasets API's load test on the table it made (``api_load``).

    The files are the stack's own input (linked, where ``make run`` puts its sample data), and
    the run writes the table where the spec says: a dataset's table has one location, which a
    scheduled run that unpausing starts would otherwise take first. Counts come from the table
    (stored) and the run's snapshot (quarantined: an earlier scheduled run quarantined too).
    """
    import httpx

    from base_platform.pipelines.data_storage import tables
    from scripts.dev_stack import launch, sqlite_iceberg_connection, wait_ready
    from tests.conftest import free_port

    home = tmp / "home"
    incoming = home / "data" / "transactions" / "incoming"
    incoming.mkdir(parents=True)
    for csv_file in source.glob("*.csv"):
        os.link(csv_file, incoming / csv_file.name)
    extra = {"AIRFLOW__CORE__PARALLELISM": "2"}
    stack = wait_ready(launch(home, free_port(), free_port(), free_port(), extra))
    try:
        login = {"username": "admin", "password": stack.password}
        token = httpx.post(f"{stack.api}/auth/token", json=login).json()["access_token"]
        client = httpx.Client(
            base_url=f"{stack.api}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        path = "/dags/pipeline_transactions"
        client.patch(path, json={"is_paused": False}).raise_for_status()
        conf = {"full_refresh": True}
        run = client.post(f"{path}/dagRuns", json={"logical_date": None, "conf": conf})
        run.raise_for_status()
        url = f"{path}/dagRuns/{run.json()['dag_run_id']}"
        while (state := client.get(url).json())["state"] not in {"success", "failed"}:
            time.sleep(2)
        if state["state"] != "success":
            raise SystemExit(f"pipeline_transactions through Airflow: {state['state']}")
        start, end = (
            datetime.fromisoformat(state[k].replace("Z", "+00:00")) for k in ("start_date", "end_date")
        )
        catalog = sqlite_iceberg_connection(home / "iceberg.db", home / "warehouse")
        os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"] = json.dumps(catalog)
        table = tables.load("transactions")
        assert table is not None
        (record,) = [r for r in tables.history(table) if r.dag_run.endswith(run.json()["dag_run_id"])]
        counts = (table.scan().count(), record.rows_quarantined)
        ids = table.scan(selected_fields=("transaction_id",)).to_arrow().column("transaction_id")
        keys = random.Random(7).sample(ids.to_pylist(), 5000)
        served = api_load.load(f"{stack.api}/base-platform/api/datasets", token, keys)
        seconds = (end - start).total_seconds()
        return {"seconds": seconds, "counts": counts, "api": served, "floor": api_load.floor(keys)}
    finally:
        stack.proc.terminate()
        stack.proc.wait(timeout=60)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def run_contenders(
    source: Path, tmp: Path, rounds: int, expected: dict[str, tuple[int, int]]
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every contender, interleaved, ``rounds`` times; the counts each wrote, and any mismatch."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    wrong = []
    names = list(CONTENDERS)
    before = before_tree(tmp)
    for number in range(rounds):
        for name in names[number % len(names) :] + names[: number % len(names)]:
            target = str(tmp / f"out-{name}")
            result = measure(name, str(source), target, before)
            counts = stored_and_quarantined(name, target)
            if counts != expected[name]:
                wrong.append(
                    f"{name}, round {number + 1}: stored + quarantined {counts}, expected {expected[name]}"
                )
            runs[name].append(result | {"counts": counts})
    return runs, wrong


def main() -> int:
    from benchmarks.datagen import generate

    gigabytes = float(os.environ.get("BENCH_GB", "2"))
    files = int(os.environ.get("BENCH_FILES", "8"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        source = Path(tmp) / "in"
        summary = generate(int(gigabytes * 1e9 / BYTES_PER_ROW), "csv", 0.01, source, files=files)
        gb = summary.bytes / 1e9
        print(f"generated {gb:.2f} GB, {summary.rows} rows ({summary.corrupt} corrupt), {files} files")
        checked = (summary.rows - summary.corrupt, summary.corrupt)
        expected = {
            "ours": checked,
            "ours-before": checked,
            "duckdb": checked,
            "polars": (summary.rows, 0),
            "arrow-io": (summary.rows, 0),
        }
        runs, wrong = run_contenders(source, Path(tmp), rounds, expected)
        airflow = through_airflow(source, Path(tmp))
        airflow_counts = airflow["counts"]
        if airflow_counts != checked:
            wrong.append(f"through Airflow: stored + quarantined {airflow_counts}, expected {checked}")
    speed = {name: [gb / (r["seconds"] / 3600) for r in results] for name, results in runs.items()}
    median = {name: statistics.median(values) for name, values in speed.items()}
    print(f"{'contender':<22} {'GB/h: median (range)':>26} {'peak RSS GB, summed':>24}  stored + quarantined")
    for name, results in runs.items():
        rss = [r["peak_rss"] / 1e9 for r in results]
        stored, quarantined = results[0]["counts"]
        print(f"{name:<22} {_spread(speed[name]):>26} {_spread(rss):>24}  {stored} + {quarantined}")
    airflow_speed = gb / (airflow["seconds"] / 3600)
    stored, quarantined = airflow_counts
    print(f"{'ours through Airflow':<22} {airflow_speed:>26.1f} {'':>24}  {stored} + {quarantined}")
    for line in api_load.report(airflow["api"], airflow["floor"]):
        print(line)
    print(f"ours, seconds per stage summed over shards (last round): {runs['ours'][-1]['stage_seconds']}")
    commits = {name: [r["commit_seconds"] for r in runs[name]] for name in ("ours", "ours-before")}
    before = _spread(commits["ours-before"])
    revision = os.environ.get("BENCH_BEFORE", BEFORE)
    print(f"commit seconds: ours {_spread(commits['ours'])}, ours at {revision} {before}")
    checks_seconds = [r["stage_seconds"].get("key_check", 0.0) for r in runs["ours"]]
    print(f"ours, key checks against the table and across the run (in commit): {_spread(checks_seconds)} s")
    peak = statistics.median(r["peak_rss"] for r in runs["ours"]) / 1e9
    checks = [
        ("ours through Airflow, GB/h", airflow_speed, ">=", TARGETS["airflow_gb_per_hour"]),
        ("ours / DuckDB (same work)", median["ours"] / median["duckdb"], ">=", TARGETS["vs_duckdb"]),
        ("ours / Arrow I/O floor", median["ours"] / median["arrow-io"], ">=", TARGETS["vs_arrow_io"]),
        (f"ours / ours at {revision}", median["ours"] / median["ours-before"], ">=", TARGETS["vs_before"]),
        ("ours, summed peak RSS GB", peak, "<", TARGETS["peak_rss_gb"]),
    ]
    for label, value, op, target in checks:
        ok = value >= target if op == ">=" else value < target
        print(f"{label:<30} {value:8.2f} (target {op} {target:g}): {'PASS' if ok else 'FAIL'}")
    print(
        f"through Airflow / the engine alone: {airflow_speed / median['ours']:.2f}x; "
        f"ours / Polars (no checks, a reference only): {median['ours'] / median['polars']:.2f}x"
    )
    for line in wrong:
        print(f"COUNT MISMATCH: {line}")
    return 1 if wrong else 0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())

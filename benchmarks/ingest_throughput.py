"""Ingest throughput: the pipeline engine against Polars and DuckDB on the same CSV files, in one run.

- ours: ``engine.discover`` → ``engine.process_shard`` per shard (two at a time, like two
  worker slots) → ``engine.commit``, exactly as the DAG's tasks call them, every stage on;
- baseline A: Polars ``scan_csv`` → ``sink_parquet`` (zstd), no checks;
- baseline B: the same work as ours as one DuckDB ``COPY``: casts, the three quality rules,
  SHA-256 of the two PII columns, partitioned by date;
- Arrow I/O: the engine's own reader into a zstd Parquet file per input, two at a time, no
  checks: what any engine built on pyarrow's reader and writer costs before it checks a row.

Each runs in its own process so peak RSS is its own. Prints GB/hour, peak RSS and the ratios.
``BENCH_GB`` sets the input size (default 2), ``BENCH_FILES`` the number of files (default 8).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

TARGETS = {"gb_per_hour": 300.0, "vs_duckdb": 1.0, "vs_polars": 0.7, "peak_rss_gb": 1.5}
BYTES_PER_ROW = 172  # of the generated CSV, measured


def _shard(args: tuple[dict[str, Any], str, str]) -> dict[str, Any]:
    from base_platform.pipelines import engine
    from base_platform.pipelines.spec import load_pipelines

    shard, target, run_key = args
    return engine.process_shard(load_pipelines()[0], engine.Shard(**shard), run_key, target, b"benchmark-key")


def ours(source: str, target: str) -> dict[str, Any]:
    from dataclasses import asdict

    from base_platform.pipelines import engine
    from base_platform.pipelines.spec import load_pipelines

    pipeline = load_pipelines()[0]
    shards = engine.discover(pipeline, source, target, full_refresh=True)
    # fresh processes, as each task is: a forked worker would count the parent's pages in its RSS
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_shard, [(asdict(s), target, "bench") for s in shards]))
    manifest = engine.commit(
        pipeline, "bench", results, target, {"start": None, "end": None}, full_refresh=True
    )
    return {key: manifest[key] for key in ("rows_in", "rows_stored", "rows_quarantined", "stage_seconds")}


def _copy_file(paths: tuple[str, str]) -> int:
    import pyarrow.parquet as pq

    from base_platform.pipelines.modules import ingestion
    from base_platform.pipelines.spec import load_pipelines

    source_file, target_file = paths
    pipeline = load_pipelines()[0]
    names = list(pipeline.contract.names)
    rows = 0
    with pq.ParquetWriter(target_file, ingestion.raw_schema(names), compression="zstd") as writer:
        for raw in ingestion.read_uri(source_file, names, pipeline.spec.source):
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


def duckdb_baseline(source: str, target: str) -> dict[str, Any]:
    import duckdb

    Path(target).mkdir(parents=True, exist_ok=True)
    query = f"""
        COPY (
          SELECT transaction_id, account_id, ts AS event_time, amt AS amount, currency, merchant,
                 merchant_country, channel, sha256(customer_email) AS customer_email,
                 sha256(customer_phone) AS customer_phone, card_last4, status, memo,
                 CAST(ts AS DATE) AS event_date
          FROM (
            SELECT *, TRY_STRPTIME(event_time, '%Y-%m-%dT%H:%M:%SZ') AS ts,
                      TRY_CAST(amount AS DECIMAL(18,2)) AS amt
            FROM read_csv('{source}/*.csv', all_varchar=true, header=true, ignore_errors=true)
          )
          WHERE transaction_id IS NOT NULL AND ts IS NOT NULL AND amt BETWEEN -100000 AND 1000000
            AND regexp_matches(customer_email, '^[^@ ]+@[^@ ]+\\.[a-z]{{2,}}$')
        ) TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE)
    """  # noqa: S608 - the paths are this benchmark's own temporary folders
    with duckdb.connect() as con:
        con.execute("SET memory_limit = '1GB'")
        con.execute(query)
    return {}


def measure(name: str, source: str, target: str) -> dict[str, Any]:
    """Run one contender in a fresh process; report wall time and its peak RSS."""
    code = (
        f"import json, resource, sys, time; sys.path[:0] = [{str(ROOT)!r}]\n"
        "from benchmarks.ingest_throughput import CONTENDERS\n"
        f"started = time.perf_counter(); extra = CONTENDERS[{name!r}]({source!r}, {target!r})\n"
        "seconds = time.perf_counter() - started\n"
        "rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(json.dumps({'seconds': seconds, 'peak_rss_kb': rss, **extra}))\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    env = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"} | os.environ  # as the image and `make run` set it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


CONTENDERS = {"ours": ours, "polars": polars_baseline, "duckdb": duckdb_baseline, "arrow-io": arrow_io}


def main() -> int:
    from benchmarks.datagen import generate

    gigabytes = float(os.environ.get("BENCH_GB", "2"))
    files = int(os.environ.get("BENCH_FILES", "8"))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        source = Path(tmp) / "in"
        started = time.perf_counter()
        summary = generate(int(gigabytes * 1e9 / BYTES_PER_ROW), "csv", 0.01, source, files=files)
        print(
            f"generated {summary.bytes / 1e9:.2f} GB, {summary.rows} rows, {files} files "
            f"in {time.perf_counter() - started:.0f} s"
        )
        rows = []
        for name in CONTENDERS:
            result = measure(name, str(source), str(Path(tmp) / f"out-{name}"))
            result["gb_per_hour"] = summary.bytes / 1e9 / (result["seconds"] / 3600)
            rows.append((name, result))
            print(
                f"{name:>8}: {result['seconds']:6.1f} s  {result['gb_per_hour']:7.1f} GB/h  "
                f"peak RSS {result['peak_rss_kb'] / 1e6:.2f} GB"
            )
    results = dict(rows)
    counts = results["ours"]
    stored, quarantined = counts["rows_stored"], counts["rows_quarantined"]
    print(f"ours: rows in {counts['rows_in']} = stored {stored} + quarantined {quarantined}")
    print(f"ours: seconds per stage, summed over shards: {counts['stage_seconds']}")
    speed = {name: result["gb_per_hour"] for name, result in results.items()}
    for label, name, target in (
        ("DuckDB (same work)", "duckdb", "vs_duckdb"),
        ("Polars (no checks)", "polars", "vs_polars"),
    ):
        print(f"ours vs {label}: {speed['ours'] / speed[name]:.2f}x (target >= {TARGETS[target]})")
    print(
        f"Arrow I/O alone (reader + zstd writer, no checks): {speed['arrow-io'] / speed['polars']:.2f}x "
        f"Polars; ours: {speed['ours'] / speed['arrow-io']:.2f}x Arrow I/O"
    )
    print(
        f"ours: {results['ours']['gb_per_hour']:.0f} GB/h (target >= {TARGETS['gb_per_hour']:.0f}), "
        f"peak RSS {results['ours']['peak_rss_kb'] / 1e6:.2f} GB (target < {TARGETS['peak_rss_gb']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

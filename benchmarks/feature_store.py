"""account_spend materialised over the 11.6 M-row transactions, and its online lookups:
``python benchmarks/feature_store.py``.

The rows are ``benchmarks.datagen``'s clean transactions (500,000 accounts, 6 merchants, 5 days;
``BENCH_ROWS``, default 11,627,906, the ingest benchmark's 2 GB), typed as the dataset stores
them, in an Iceberg table of a temporary SQL catalog, with the merchants reference beside it.

Materialisation: ours (``offline.materialise``, a full refresh: DuckDB's window aggregates from
the Iceberg snapshot and one Iceberg overwrite of the offline table) against a bare baseline doing
the same work: a hand-written DuckDB query of the same 18 features and label over the snapshot's
Parquet files, written to one Parquet file. Both results are checked to agree (rows and column
sums). Online: ``get_online_features`` for 100 random accounts, 500 times, from Redis (the
production store, a redis-server of the benchmark's own) and from SQLite (``make run``'s),
against a bare ``HMGET`` / ``SELECT`` of the same keys. Target: p95 below 20 ms.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

ROWS = int(os.environ.get("BENCH_ROWS", "11627906"))
LOOKUPS, ENTITIES, TARGET_P95_MS = 500, 100, 20.0
WINDOWS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}


def transactions(rows: int) -> Any:
    """The generator's clean rows, typed as the transactions dataset stores them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from benchmarks.datagen import clean_chunk

    rng = np.random.default_rng(7)
    parts = []
    for start in range(0, rows, 1_000_000):
        raw = clean_chunk(rng, start, min(1_000_000, rows - start))
        parts.append(
            pa.table(
                {
                    "transaction_id": raw["transaction_id"],
                    "account_id": raw["account_id"],
                    "event_time": pc.strptime(raw["event_time"], "%Y-%m-%dT%H:%M:%SZ", "us").cast(
                        pa.timestamp("us", tz="UTC")
                    ),
                    "amount": raw["amount"].cast(pa.decimal128(18, 2)),
                    "merchant": raw["merchant"],
                    "status": raw["status"],
                }
            )
        )
    return pa.concat_tables(parts)


def land(name: str, rows: Any, partition: str | None) -> Any:
    from pyiceberg.transforms import DayTransform

    from base_platform.pipelines.data_storage import tables

    catalog = tables.catalog()
    catalog.create_namespace_if_not_exists("base")
    table = catalog.create_table(tables.identifier(name), schema=rows.schema)
    if partition:
        with table.update_spec() as update:
            update.add_field(partition, DayTransform(), "day")
    table.append(rows)
    return table


def baseline_sql(files: list[str], merchants: str) -> str:
    """account_spend written out by hand: the same features and label, independent of our builder."""

    def frame(seconds: int) -> str:
        return (
            "(PARTITION BY account_id ORDER BY event_time RANGE BETWEEN "
            f"INTERVAL '{seconds * 1_000_000 - 1} microseconds' PRECEDING AND CURRENT ROW)"
        )

    columns = []
    for window, seconds in WINDOWS.items():
        columns += [
            f"COALESCE(SUM(amount) OVER {frame(seconds)}, 0) AS amount_sum_{window}",
            f"COUNT(amount) OVER {frame(seconds)} AS amount_count_{window}",
            f"AVG(amount) OVER {frame(seconds)} AS amount_mean_{window}",
        ]
    columns += [
        f"COUNT(DISTINCT merchant) OVER {frame(86_400)} AS merchant_distinct_count_24h",
        f"COUNT(DISTINCT merchant) OVER {frame(WINDOWS['30d'])} AS merchant_distinct_count_30d",
        f"COUNT(DISTINCT category) OVER {frame(WINDOWS['30d'])} AS merchant_category_distinct_count_30d",
        "COALESCE(SUM(CASE WHEN category = 'travel' THEN amount END) "
        f"OVER {frame(WINDOWS['30d'])}, 0) AS travel_sum_30d",
        f"COUNT(CASE WHEN category = 'travel' THEN amount END) OVER {frame(WINDOWS['30d'])} "
        "AS travel_count_30d",
        f"COUNT(CASE WHEN status = 'declined' THEN amount END) OVER {frame(86_400)} AS declined_count_24h",
        "CASE WHEN event_time + INTERVAL 7 DAYS <= (SELECT MAX(event_time) FROM tx) THEN "
        "COALESCE(BOOL_OR(status = 'reversed') OVER (PARTITION BY account_id ORDER BY event_time "
        "RANGE BETWEEN INTERVAL '1 microsecond' FOLLOWING AND INTERVAL 7 DAYS FOLLOWING), FALSE) END "
        "AS reversed_within_7d",
    ]
    listed = ", ".join(f"'{f}'" for f in files)
    return (
        f"WITH tx AS (SELECT t.*, m.category FROM read_parquet([{listed}]) t "  # noqa: S608 - our own paths
        f"LEFT JOIN read_parquet('{merchants}') m USING (merchant)) "
        f"SELECT account_id, event_time, transaction_id, {', '.join(columns)} FROM tx"
    )


def check(name: str, table: Any) -> dict[str, Any]:
    """Rows and column sums: what both contenders must agree on."""
    import pyarrow.compute as pc

    sums = {
        c: pc.sum(table.column(c)).as_py() for c in ("amount_sum_30d", "amount_count_7d", "travel_count_30d")
    }
    sums["merchant_distinct_count_30d"] = pc.sum(table.column("merchant_distinct_count_30d")).as_py()
    labels = table.column("reversed_within_7d")
    sums["reversed_within_7d"] = f"{pc.sum(labels.cast('int64')).as_py() or 0} true, {labels.null_count} open"
    return {"rows": table.num_rows, **{k: str(v) for k, v in sums.items()}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def latencies(call: Any, accounts: list[str]) -> list[float]:
    rng = random.Random(1)
    found = []
    for _ in range(LOOKUPS):
        asked = rng.sample(accounts, ENTITIES)
        start = time.perf_counter()
        call(asked)
        found.append((time.perf_counter() - start) * 1000)
    return found


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    from scripts.dev_stack import sqlite_iceberg_connection

    work = Path(tempfile.mkdtemp(prefix="feature-bench-"))
    catalog = sqlite_iceberg_connection(work / "iceberg.db", work / "warehouse")
    os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"] = json.dumps(catalog)
    os.environ["BASE_PIPELINES_ROOT"] = str(work)
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> int:
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq
    import redis

    from base_platform.pipelines.feature_engineering import offline, online
    from base_platform.pipelines.feature_engineering.views import feature_view_named
    from benchmarks.datagen import MERCHANT_CATEGORIES
    from benchmarks.ingest_throughput import cpu_name

    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores; {platform.python_version()}")
    rows = transactions(ROWS)
    source = land("transactions", rows, "event_time")
    merchants = pa.table(
        {"merchant": list(MERCHANT_CATEGORIES), "category": list(MERCHANT_CATEGORIES.values())}
    )
    land("merchants", merchants, None)
    del rows
    view = feature_view_named("account_spend")
    print(f"{ROWS:,} transactions of {len(view.feature_names)} features and {len(view.labels)} label")

    start = time.perf_counter()
    done = offline.materialise(view, full_refresh=True)
    ours = time.perf_counter() - start
    ours_check = check("ours", offline.read_offline(view))

    files = [task.file.file_path for task in source.scan().plan_files()]
    pq.write_table(merchants, work / "merchants.parquet")
    start = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    result = connection.sql(baseline_sql(files, str(work / "merchants.parquet"))).to_arrow_table()
    pq.write_table(result, work / "baseline.parquet", compression="zstd")
    bare = time.perf_counter() - start
    bare_check = check("baseline", result)
    del result

    print(f"{'materialisation':<34} {'seconds':>8} {'rows/s':>12}")
    print(f"{'ours (Iceberg snapshot -> table)':<34} {ours:>8.1f} {done.rows / ours:>12,.0f}")
    print(f"{'bare DuckDB query -> Parquet':<34} {bare:>8.1f} {ROWS / bare:>12,.0f}")
    print(f"ours / bare: {bare / ours:.2f}x the baseline's rate")
    same = ours_check == bare_check and done.rows == ROWS
    print(f"results agree: {same} ({ours_check})" + ("" if same else f" baseline {bare_check}"))

    server = shutil.which("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            server or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        stores: dict[str, online.OnlineStore] = {
            "Redis": online.RedisOnlineStore(client),
            "SQLite": online.SqliteOnlineStore(str(work / "online.db")),
        }
        bare_calls = {
            "Redis": lambda keys: client.hmget("base:features:account_spend", keys),
            "SQLite": lambda keys: sqlite_bare(work / "online.db", keys),
        }
        print(f"\nonline lookups of {ENTITIES} accounts, {LOOKUPS} times: p50 / p95 ms")
        failed = False
        for name, store in stores.items():
            published = offline.publish_online(view, store)
            accounts = [
                key
                for key, _ in online.encoded(
                    offline.latest_features(view)[1].select(["account_id"]), "account_id"
                )
            ]
            mine = latencies(
                lambda keys, s=store: online.get_online_features("account_spend", keys, s), accounts
            )
            theirs = latencies(bare_calls[name], accounts)
            verdict = "PASS" if p(mine, 95) < TARGET_P95_MS else "FAIL"
            failed |= verdict == "FAIL"
            print(
                f"{name:<7} {published['entities']:,} entities: ours {p(mine, 50):.2f} / {p(mine, 95):.2f}, "
                f"bare {p(theirs, 50):.2f} / {p(theirs, 95):.2f} "
                f"(ours/bare p95 {p(mine, 95) / p(theirs, 95):.1f}x); "
                f"target p95 < {TARGET_P95_MS:.0f} ms: {verdict}"
            )
    finally:
        proc.terminate()
        proc.wait()
    return 0 if same and not failed else 1


def sqlite_bare(path: Path, keys: list[str]) -> list[Any]:
    import sqlite3

    with sqlite3.connect(path) as connection:
        marks = ", ".join("?" for _ in keys)
        query = f"SELECT entity, value FROM features WHERE view = 'account_spend' AND entity IN ({marks})"  # noqa: S608
        return connection.execute(query, keys).fetchall()


if __name__ == "__main__":
    sys.exit(main())

"""The commit's key check against the table: our key index against a scan of the table's keys.

``python -m benchmarks.key_check`` (``KEYS_TABLE`` rows in the table, default 20 million;
``KEYS_RUN`` in the run, default 2 million, ``KEYS_REPEATED`` of them already in the table).

- ours: what ``commit`` does for an append: the run's key file against the index of ``main``'s
  snapshot (``key_uniqueness._known_keys``), then the next snapshot's index: the old one with
  the run's stored keys less the repeated (``table_keys.write_merged``). The index is kept up
  by every commit, so it is made before the clock starts, as the baseline's Parquet files are;
- DuckDB, the same answer without an index: the table's key column scanned from its Parquet
  files and semi-joined with the run's keys, all cores.

Both must find exactly the repeated keys. Prints each one's seconds (median of ``KEYS_ROUNDS``),
the ratio, and the CPU.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from base_platform.files import Location
from base_platform.pipelines.data_quality import key_uniqueness, quality_rules, table_keys
from benchmarks.ingest_throughput import cpu_name

FILE_ROWS = 2_000_000  # rows per Parquet file of the table, as the engine's 128 MB files hold


def key_column(numbers: np.ndarray) -> pa.Array:
    return pa.array(np.char.add("tx-", np.char.zfill(numbers.astype(str), 12)))


def main() -> int:
    table_rows = int(os.environ.get("KEYS_TABLE", "20000000"))
    run_rows = int(os.environ.get("KEYS_RUN", "2000000"))
    repeated = int(os.environ.get("KEYS_REPEATED", "20000"))
    rounds = int(os.environ.get("KEYS_ROUNDS", "3"))
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores")
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        root = Location.of(tmp)
        fingerprints = []
        for number, start in enumerate(range(0, table_rows, FILE_ROWS)):
            keys = key_column(np.arange(start, min(table_rows, start + FILE_ROWS)))
            pq.write_table(pa.table({"transaction_id": keys}), f"{tmp}/table-{number}.parquet")
            fingerprints.append(quality_rules.keys_of({"transaction_id": keys})[0])
        table_keys.write_keys(root, "_keys/main.u64", np.unique(np.concatenate(fingerprints)))
        again = rng.choice(table_rows, repeated, replace=False)
        run_numbers = np.concatenate([again, np.arange(table_rows, table_rows + run_rows - repeated)])
        run_keys = key_column(run_numbers)
        pq.write_table(pa.table({"transaction_id": run_keys}), f"{tmp}/run.parquet")
        run_fingerprints = np.unique(quality_rules.keys_of({"transaction_id": run_keys})[0])
        table_keys.write_keys(root, "run.u64", run_fingerprints)
        files = len(fingerprints)
        print(f"table: {table_rows:,} keys in {files} files; run: {run_rows:,} keys, {repeated:,} repeated")

        def ours() -> int:
            (found,) = key_uniqueness._known_keys(root, "_keys/main.u64", ["run.u64"])
            new = run_fingerprints[~quality_rules.members(run_fingerprints, found)]
            table_keys.write_merged(root, "_keys/next.u64", "_keys/main.u64", new)
            return len(found)

        def duckdb_scan() -> int:
            import duckdb

            query = (
                f"SELECT count(*) FROM read_parquet('{tmp}/run.parquet') r SEMI JOIN "  # noqa: S608
                f"read_parquet('{tmp}/table-*.parquet') t USING (transaction_id)"
            )
            found: int = duckdb.execute(query).fetchall()[0][0]
            return found

        seconds: dict[str, list[float]] = {"ours": [], "duckdb": []}
        for _ in range(rounds):
            for name, contender in (("ours", ours), ("duckdb", duckdb_scan)):
                started = time.perf_counter()
                found = contender()
                seconds[name].append(time.perf_counter() - started)
                if found != repeated:
                    print(f"COUNT MISMATCH: {name} found {found} repeated keys, {repeated} expected")
                    return 1
        median = {name: statistics.median(values) for name, values in seconds.items()}
        index_mb = Path(tmp, "_keys", "main.u64").stat().st_size / 1e6
        print(f"ours (key index, {index_mb:.0f} MB): {median['ours']:.3f} s")
        print(f"DuckDB, a scan of the table's keys: {median['duckdb']:.3f} s")
        print(f"ours / DuckDB speed: {median['duckdb'] / median['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

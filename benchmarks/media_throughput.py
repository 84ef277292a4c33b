"""multimodal_processing's four kinds through the engine, against a bare loop of the same library
calls: ``python benchmarks/media_throughput.py``.

For each format, ``benchmarks.mediagen`` writes a mix with 1% broken files (``BENCH_FILES_<KIND>``
overrides the counts), and both contenders run ``BENCH_ROUNDS`` times (default 2) interleaved;
the best of each counts. Ours: ``engine.discover`` → ``engine.process_shard`` per shard, two at a
time in fresh processes as two worker slots run them → ``engine.commit`` into an Iceberg table:
every stage on (contract, quality, security, Parquet, commit, audit). The baseline: one process
reading each file and making its row with the same extractor (pypdf, Pillow, shapely and pyproj,
pyarrow), nothing else. Both must account for every file; the pipeline must reach 0.8x the
baseline's files/s. Prints files/s and MB/s per kind, and the CPU.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

COUNTS = {"document": 4000, "image": 1500, "geojson": 60000, "timeseries": 2000}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))  # interleaved; the best of each counts
PIPELINES = {"document": "documents", "image": "images", "geojson": "parcels", "timeseries": "sensor_series"}
TARGET = 0.8
KEY = b"benchmark-hmac-key"


def _shard(args: tuple[str, dict[str, Any], str]) -> Any:
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import Shard
    from base_platform.pipelines.spec import pipeline_named

    name, shard, target = args
    return engine.process_shard(pipeline_named(name), Shard.from_json(shard), "bench", target, KEY)


def ours(name: str, source: Path, target: Path) -> dict[str, Any]:
    from base_platform.files import resolve
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import CommitRequest
    from base_platform.pipelines.spec import pipeline_named

    pipeline = pipeline_named(name)
    shutil.rmtree(resolve(pipeline.spec.storage.uri), ignore_errors=True)  # no thumbnail from a round before
    start = time.perf_counter()
    shards = engine.discover(pipeline, str(source), str(target), full_refresh=True)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_shard, [(name, s.to_json(), str(target)) for s in shards]))
    request = CommitRequest("bench", tuple(results), str(target), {"start": None, "end": None}, True, key=KEY)
    record = engine.commit(pipeline, request)
    return {
        "seconds": time.perf_counter() - start,
        "stored": record.rows_stored,
        "quarantined": record.rows_quarantined,
        "shards": len(shards),
    }


def bare(kind: str, name: str, source: Path, side: Path) -> dict[str, Any]:
    from base_platform.pipelines.multimodal_processing import media_kinds
    from base_platform.pipelines.spec import MediaSource, pipeline_named

    spec = pipeline_named(name).spec.source
    assert isinstance(spec, MediaSource)

    def write(file: str, data: bytes) -> str:
        (side / file).write_bytes(data)
        return file

    side.mkdir(parents=True, exist_ok=True)
    rows = broken = 0
    start = time.perf_counter()
    for path in sorted(source.iterdir()):
        if not path.name.lower().endswith(media_kinds.EXTENSIONS[kind]):
            continue
        try:
            found = media_kinds.extract(kind, path.read_bytes(), str(path), spec, write)
            rows, broken = rows + len(found.rows), broken + len(found.rejects)
        except media_kinds.Unreadable:
            broken += 1
    return {"seconds": time.perf_counter() - start, "stored": rows, "quarantined": broken}


def main() -> int:
    from benchmarks.ingest_throughput import cpu_name
    from benchmarks.mediagen import generate
    from scripts.dev_stack import sqlite_iceberg_connection

    work = Path(tempfile.mkdtemp(prefix="media-bench-"))
    catalog = sqlite_iceberg_connection(work / "iceberg.db", work / "warehouse")
    os.environ["AIRFLOW_CONN_ICEBERG_DEFAULT"] = json.dumps(catalog)
    os.environ["BASE_PIPELINES_ROOT"] = str(work / "root")
    print(f"CPU: {cpu_name()}; {os.cpu_count()} cores")
    columns = f"{'ours files/s':>12} {'MB/s':>6}  {'bare files/s':>12} {'MB/s':>6}"
    print(f"{'kind':<11} {'files':>6} {'MB':>7}  {columns}  ratio")
    failed = False
    try:
        for kind, name in PIPELINES.items():
            count = int(os.environ.get(f"BENCH_FILES_{kind.upper()}", COUNTS[kind]))
            made = generate(kind, count, 0.01, work / kind / "in")
            megabytes = made["bytes"] / 1e6
            runs = [
                (
                    bare(kind, name, work / kind / "in", work / kind / f"bare-side-{round_}"),
                    ours(name, work / kind / "in", work / kind / "out"),
                )
                for round_ in range(ROUNDS)
            ]
            baseline = min((b for b, _ in runs), key=lambda run: run["seconds"])
            mine = min((o for _, o in runs), key=lambda run: run["seconds"])
            ratio = baseline["seconds"] / mine["seconds"]
            right = all(
                (run["stored"], run["quarantined"]) == (made["stored"], made["quarantined"])
                for run in (mine, baseline)
            )
            verdict = "PASS" if ratio >= TARGET and right else "FAIL"
            failed |= verdict == "FAIL"
            print(
                f"{kind:<11} {count:>6} {megabytes:>7.1f}  {count / mine['seconds']:>12,.0f} "
                f"{megabytes / mine['seconds']:>6.1f}  {count / baseline['seconds']:>12,.0f} "
                f"{megabytes / baseline['seconds']:>6.1f}  {ratio:.2f}x (>= {TARGET}: {verdict}; "
                f"{mine['shards']} shards; stored {mine['stored']} + quarantined {mine['quarantined']}"
                f" = {count}"
                f"{'' if right else ' MISMATCH'})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The engine on generated transactions: nothing lost, nothing twice, nothing partial visible."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_ingestion import decoding
from base_platform.pipelines.data_quality import key_uniqueness, table_keys
from base_platform.pipelines.data_security.protection import unseal
from base_platform.pipelines.data_storage import staging_writer, tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord, ShardResult
from base_platform.pipelines.spec import Pipeline, Unique, pipeline_named
from benchmarks.datagen import generate
from tests.conftest import ROOT, iceberg_connection

KEY = b"unit-test-key"


def via_xcom(results: list[ShardResult]) -> list[ShardResult]:
    """The results as commit gets them in a DAG run: through JSON."""
    return [ShardResult.from_json(json.loads(json.dumps(r.to_json()))) for r in results]


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def run(
    pipeline: Pipeline, source: Path, target: Path, run_key: str = "run-1", full: bool = False
) -> RunRecord:
    shards = engine.discover(pipeline, str(source), str(target), full)
    results = [engine.process_shard(pipeline, shard, run_key, str(target), KEY) for shard in shards]
    return engine.commit(
        pipeline,
        CommitRequest(run_key, tuple(results), str(target), {"start": None, "end": None}, full, key=KEY),
    )


def generate_run(rows: int, out: Path, number: int, files: int = 1) -> None:
    """Rows whose keys no other run has (``tx<number>-…``): the generator numbers from 0 each time."""
    generate(rows, "csv", 0.0, out, files=files, seed=number)
    for path in out.glob("*.csv"):
        path.write_text(path.read_text().replace("tx-", f"tx{number}-"))


def with_source(pipeline: Pipeline, **fields: Any) -> Pipeline:
    """The pipeline with its spec's source changed (format, glob, shard_mb)."""
    spec = pipeline.spec.model_copy(update={"source": pipeline.spec.source.model_copy(update=fields)})
    return pipeline.model_copy(update={"spec": spec})


def stored(target: Path) -> Any:
    """The dataset's rows as any Iceberg reader sees them: its table's current snapshot."""
    table = tables.load("transactions")
    assert table is not None and table.location() == str(target)
    return table.scan().to_arrow()


def quarantined(target: Path) -> Any:
    return ds.dataset(target / "_quarantine", format="parquet").to_table()


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.slow
def test_every_row_is_stored_or_quarantined_with_its_reason(
    pipeline: Pipeline, tmp_path: Path, fmt: str
) -> None:
    pipeline = with_source(pipeline, format=fmt, glob=f"*.{fmt}")
    summary = generate(3000, fmt, 0.06, tmp_path / "in", files=2)
    manifest = run(pipeline, tmp_path / "in", tmp_path / "out")
    assert manifest.rows_in == 3000 == manifest.rows_stored + manifest.rows_quarantined
    assert manifest.rows_quarantined == summary.corrupt
    assert manifest.freshness and manifest.freshness[0]["column"] == "event_time"
    assert manifest.freshness[0]["latest"]
    assert stored(tmp_path / "out").num_rows == manifest.rows_stored
    reasons = " ".join(quarantined(tmp_path / "out").column("_reason").to_pylist())
    for expected in (
        "event_time: not a timestamp",
        "amount: not a decimal",
        "currency: not accepted",
        "transaction_id: missing",
        "duplicate in this run",
    ):
        assert expected in reasons
    assert "invalid UTF-8" in reasons or fmt == "ndjson"  # a JSON line with bad bytes is rejected whole
    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders == ["_keys", "_quarantine", "data", "metadata"]
    assert all(p.name.startswith("event_time_day=") for p in (tmp_path / "out" / "data").iterdir())


@pytest.mark.slow
def test_stored_data_holds_no_plain_pii_and_is_zstd(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(500, "csv", 0.0, tmp_path / "in")
    manifest = run(pipeline, tmp_path / "in", tmp_path / "out")
    table = stored(tmp_path / "out")
    assert table.schema.field("customer_email").type == pa.binary(32)  # the raw HMAC-SHA256
    assert table.column("customer_email").null_count == 0
    assert all(v.startswith("**") for v in table.column("card_last4").to_pylist())
    table = tables.load("transactions")
    assert table is not None and manifest.files == len(list(table.scan().plan_files()))
    first_file = next(iter(table.scan().plan_files())).file.file_path
    first = pq.ParquetFile(first_file).metadata.row_group(0)
    assert first.column(0).compression == "ZSTD"
    encodings = {first.column(i).path_in_schema: first.column(i).encodings for i in range(first.num_columns)}
    assert "RLE_DICTIONARY" in encodings["channel"]  # four values: a dictionary pays off
    assert "RLE_DICTIONARY" not in encodings["customer_email"]  # HMACs are all distinct: none is built


@pytest.mark.slow
def test_a_second_run_skips_committed_inputs_and_full_refresh_replaces_everything(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate(1000, "csv", 0.02, tmp_path / "in", files=2)
    first = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    assert engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False) == []
    again = run(pipeline, tmp_path / "in", tmp_path / "out", "run-2", full=True)
    assert again.rows_stored == first.rows_stored == stored(tmp_path / "out").num_rows
    table = tables.load("transactions")
    assert table is not None
    assert [s.summary.operation.value for s in table.snapshots() if s.summary] == ["append", "overwrite"]
    # The rows are replaced; the first snapshot still holds them (time travel), and the monitor
    # still compares with the run the refresh replaced.
    assert table.scan(snapshot_id=first.snapshot_id).to_arrow().num_rows == first.rows_stored
    assert [r.run for r in tables.history(table)] == ["run-1", "run-2"]
    # A full refresh starts the skip list over: only its own inputs are committed.
    assert set(tables.committed_inputs(table).values()) == {"run-2"}


def test_the_manifests_gb_per_hour_is_the_runs_wall_clock(pipeline: Pipeline, tmp_path: Path) -> None:
    """Not the shards' summed seconds, which is a per-worker rate: from discovery to commit."""
    from datetime import UTC, datetime, timedelta

    generate(2000, "csv", 0.0, tmp_path / "in", files=2)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "run-1", str(tmp_path / "out"), KEY) for s in shards]
    began = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    manifest = engine.commit(
        pipeline, CommitRequest("run-1", tuple(results), str(tmp_path / "out"), {}, started_at=began, key=KEY)
    )
    assert manifest.wall_seconds and 3600 <= manifest.wall_seconds < 3660 and manifest.started_at == began
    assert manifest.gb_per_hour == round(manifest.bytes_in / 1e9 / (manifest.wall_seconds / 3600), 3)
    assert manifest.processing_seconds == round(sum(r.seconds for r in results), 3)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.slow
def test_a_file_split_into_shards_stores_and_quarantines_exactly_what_one_shard_does(
    pipeline: Pipeline, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = generate(12_000, fmt, 0.05, tmp_path / "in")  # 2-4 MB, with quoted newlines and bad bytes
    outcomes = []
    for shard_mb in (256, 1):
        catalog = tmp_path / f"catalog{shard_mb}"
        monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(catalog / "db", catalog))
        split = with_source(pipeline, format=fmt, glob=f"*.{fmt}", shard_mb=shard_mb)
        shards = engine.discover(split, str(tmp_path / "in"), str(tmp_path / f"out{shard_mb}"), False)
        assert (len(shards) > 1) == (shard_mb == 1) and sum(s.size for s in shards) == summary.bytes
        manifest = run(split, tmp_path / "in", tmp_path / f"out{shard_mb}")
        assert engine.discover(split, str(tmp_path / "in"), str(tmp_path / f"out{shard_mb}"), False) == []
        quarantine = quarantined(tmp_path / f"out{shard_mb}")
        outcomes.append(
            (
                manifest.rows_in,
                manifest.rows_quarantined,
                manifest.bytes_in,
                [i["source"] for i in manifest.inputs],
                sorted(stored(tmp_path / f"out{shard_mb}").column("transaction_id").to_pylist()),
                sorted(  # a repeat across pieces is worded as one across files
                    zip(
                        quarantine.column("transaction_id").to_pylist(),
                        quarantine.column("_raw").to_pylist(),
                        [
                            r.replace(key_uniqueness.REPEATED, "duplicate in this run")
                            for r in quarantine["_reason"].to_pylist()
                        ],
                        strict=True,
                    ),
                    key=repr,
                ),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == (12_000, summary.corrupt)


@pytest.mark.slow
def test_a_cut_never_falls_inside_a_quoted_value(pipeline: Pipeline, tmp_path: Path) -> None:
    """Twenty of every record's 21 newlines are inside its quoted memo: a cut that ignored the
    quotes would land in a memo and break records (the generator's own quoted newlines are rare)."""
    generate(10_000, "csv", 0.0, tmp_path / "generated")
    header, *records = csv.reader(io.StringIO(next((tmp_path / "generated").glob("*.csv")).read_text()))
    memo = header.index("memo")
    (tmp_path / "in").mkdir()
    with (tmp_path / "in" / "lines.csv").open("w", newline="") as out:
        csv.writer(out).writerows(
            [header, *([*r[:memo], "line\n" * 20 + r[memo], *r[memo + 1 :]] for r in records)]
        )
    split = with_source(pipeline, shard_mb=1)
    assert len(engine.discover(split, str(tmp_path / "in"), str(tmp_path / "out"), False)) >= 3
    manifest = run(split, tmp_path / "in", tmp_path / "out")
    assert (manifest.rows_in, manifest.rows_stored) == (10_000, 10_000)
    assert all(
        value.startswith("line\n" * 20) for value in stored(tmp_path / "out").column("memo").to_pylist()
    )


def repeat_first_rows_in_the_second_file(source: Path, count: int) -> list[str]:
    """Append the first ``count`` records of the first file to the second; returns their ids."""
    first, second = sorted(source.glob("*.csv"))[:2]
    records = list(csv.reader(io.StringIO(first.read_text())))[1 : count + 1]
    with second.open("a", newline="") as out:
        csv.writer(out).writerows(records)
    return [record[0] for record in records]


@pytest.mark.parametrize("keys_at_once", [table_keys.KEYS_AT_ONCE, 7])  # 7: many small bucket groups
@pytest.mark.slow
def test_unique_holds_across_the_files_of_a_run_and_a_retried_commit_agrees(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys_at_once: int
) -> None:
    monkeypatch.setattr(table_keys, "KEYS_AT_ONCE", keys_at_once)
    generate(600, "csv", 0.0, tmp_path / "in", files=2)
    repeated = repeat_first_rows_in_the_second_file(tmp_path / "in", 3)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "r", str(tmp_path / "out"), KEY) for s in shards]
    assert sum(r.rows_quarantined for r in results) == 0  # each file alone is clean

    def crash(*args: Any) -> None:
        raise OSError("killed after staging the removed rows, before replacing the file")

    with monkeypatch.context() as patch:
        patch.setattr(staging_writer, "replace_file", crash)
        with pytest.raises(OSError, match="killed"):
            engine.commit(
                pipeline, CommitRequest("r", tuple(via_xcom(results)), str(tmp_path / "out"), {}, key=KEY)
            )
    manifest = engine.commit(
        pipeline, CommitRequest("r", tuple(via_xcom(results)), str(tmp_path / "out"), {}, key=KEY)
    )

    assert manifest.rows_in == 603 and manifest.rows_stored == 600 and manifest.rows_quarantined == 3
    ids = stored(tmp_path / "out").column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) == 600 and set(repeated) <= set(ids)
    quarantine = quarantined(tmp_path / "out").sort_by("_record")
    second = list(csv.reader(io.StringIO(sorted((tmp_path / "in").glob("*.csv"))[1].read_text())))[1:]
    assert quarantine.column("_record").to_pylist() == list(range(len(second) - 3, len(second)))
    names = list(pipeline.contract.names)
    for name in ("transaction_id", "amount"):  # not protected: kept raw, as it came in
        assert quarantine.column(name).to_pylist() == [row[names.index(name)].encode() for row in second[-3:]]
    emails = [row[names.index("customer_email")] for row in second[-3:]]
    # Protected: the HMAC a curated row holds; the raw value only sealed, for an authorised replay.
    assert quarantine.column("customer_email").to_pylist() == [
        hmac.new(KEY, e.encode(), hashlib.sha256).digest() for e in emails
    ]
    assert [unseal(s, KEY)["customer_email"] for s in quarantine.column("_sealed").to_pylist()] == emails
    assert [r.decode() for r in quarantine.column("transaction_id").to_pylist()] == repeated
    assert set(quarantine.column("_reason").to_pylist()) == {f"transaction_id: {key_uniqueness.REPEATED}"}
    assert set(quarantine.column("_source").to_pylist()) == {results[1].shard.source}
    again = engine.commit(
        pipeline, CommitRequest("r", tuple(via_xcom(results)), str(tmp_path / "out"), {}, key=KEY)
    )
    assert again == manifest  # a retry after the commit finished changes nothing


@pytest.mark.parametrize("keys_at_once", [table_keys.KEYS_AT_ONCE, 150])  # 150: the file in parts
@pytest.mark.slow
def test_a_file_too_big_for_its_keys_is_checked_in_parts_with_the_same_result(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys_at_once: int
) -> None:
    monkeypatch.setattr(table_keys, "KEYS_AT_ONCE", keys_at_once)
    monkeypatch.setattr(decoding, "BLOCK_BYTES", 16 << 10)  # about 90 rows a batch
    generate(600, "csv", 0.0, tmp_path / "in")
    source = next((tmp_path / "in").glob("*.csv"))
    records = list(csv.reader(io.StringIO(source.read_text())))[1:4]
    with source.open("a", newline="") as out:
        csv.writer(out).writerows(records)  # the first three keys again, at the end of the same file
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "r", str(tmp_path / "out"), KEY) for s in shards]
    parts = results[0].parts
    assert (len(parts) > 1) == (keys_at_once == 150)
    assert parts[-1].stop == 603 and sum(p.files for p in parts) == len(results[0].files)

    manifest = engine.commit(pipeline, CommitRequest("r", tuple(results), str(tmp_path / "out"), {}, key=KEY))
    assert (manifest.rows_in, manifest.rows_stored, manifest.rows_quarantined) == (603, 600, 3)
    ids = stored(tmp_path / "out").column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) == 600
    quarantine = quarantined(tmp_path / "out").sort_by("_record")
    assert quarantine.column("_record").to_pylist() == [600, 601, 602]
    assert [r.decode() for r in quarantine.column("transaction_id").to_pylist()] == [r[0] for r in records]
    assert all(
        r.startswith("transaction_id: duplicate in this run") for r in quarantine["_reason"].to_pylist()
    )


@pytest.mark.slow
def test_two_unique_rules_across_files_each_quarantine_their_own_rows(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    rules = (*pipeline.spec.quality, Unique(rule="unique", columns=("account_id", "event_time")))
    pipeline = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"quality": rules})})
    generate(600, "csv", 0.0, tmp_path / "in", files=2)
    first, second = sorted((tmp_path / "in").glob("*.csv"))
    records = list(csv.reader(io.StringIO(first.read_text())))[1:6]
    renamed = [[f"tx-renamed-{n}", *record[1:]] for n, record in enumerate(records[3:])]
    with second.open("a", newline="") as out:
        csv.writer(out).writerows(records[:3] + renamed)  # 3 whole repeats, 2 with only the 2nd key
    manifest = run(pipeline, tmp_path / "in", tmp_path / "out")
    assert (manifest.rows_in, manifest.rows_stored, manifest.rows_quarantined) == (605, 600, 5)
    assert Counter(quarantined(tmp_path / "out").column("_reason").to_pylist()) == {
        f"transaction_id: {key_uniqueness.REPEATED}": 3,
        f"account_id+event_time: {key_uniqueness.REPEATED}": 2,
    }
    assert stored(tmp_path / "out").num_rows == 600


def test_a_source_changed_before_commit_cannot_lose_its_repeated_rows(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate(400, "csv", 0.0, tmp_path / "in", files=2)
    repeat_first_rows_in_the_second_file(tmp_path / "in", 2)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "r", str(tmp_path / "out"), KEY) for s in shards]
    with sorted((tmp_path / "in").glob("*.csv"))[1].open("a") as changed:
        changed.write("\n")
    with pytest.raises(key_uniqueness.CommitFailed, match="changed since discover"):
        engine.commit(pipeline, CommitRequest("r", tuple(results), str(tmp_path / "out"), {}, key=KEY))
    assert no_snapshot()


def no_snapshot() -> bool:
    table = tables.load("transactions")
    return table is not None and table.current_snapshot() is None


def test_a_commit_whose_files_miss_rows_fails_before_publishing(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(800, "csv", 0.02, tmp_path / "in", files=2)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "r", str(tmp_path / "out"), KEY) for s in shards]
    (tmp_path / "out" / results[1].files[0]).unlink()  # a staged file lost outside our control
    with pytest.raises(key_uniqueness.CommitFailed, match="the run's files hold"):
        engine.commit(pipeline, CommitRequest("r", tuple(results), str(tmp_path / "out"), {}, key=KEY))
    assert no_snapshot()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_staging",
        "metadata",
    ]  # nothing published


def test_re_running_the_same_run_replaces_its_output(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(800, "csv", 0.02, tmp_path / "in")
    first = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    again = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1", full=True)
    assert stored(tmp_path / "out").num_rows == first.rows_stored == again.rows_stored
    assert quarantined(tmp_path / "out").num_rows == first.rows_quarantined


def test_a_commit_interrupted_mid_publish_completes_on_retry(pipeline: Pipeline, tmp_path: Path) -> None:
    generate(800, "csv", 0.02, tmp_path / "in", files=2)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, s, "r", str(tmp_path / "out"), KEY) for s in shards]
    staged = tmp_path / "out" / results[0].files[0]
    published = tmp_path / "out" / "data" / results[0].files[0].split("/data/", 1)[1]
    published.parent.mkdir(parents=True)
    staged.rename(published)  # what a crash after the first move leaves behind
    manifest = engine.commit(
        pipeline, CommitRequest("r", tuple(via_xcom(results)), str(tmp_path / "out"), {}, key=KEY)
    )
    assert stored(tmp_path / "out").num_rows == manifest.rows_stored == sum(r.rows_stored for r in results)


@pytest.mark.slow
def test_a_shard_killed_mid_write_leaves_nothing_visible_and_a_retry_is_whole(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate(400_000, "csv", 0.01, tmp_path / "in")
    (shard,) = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    out = str(tmp_path / "out")
    code = (
        "import sys; sys.path[:0] = ['plugins', '.']\n"
        "from base_platform.pipelines.pipeline_management import engine\n"
        "from base_platform.pipelines.run_records import Shard\n"
        "from base_platform.pipelines.spec import pipeline_named\n"
        f"shard = Shard(**{shard.__dict__!r})\n"
        f"engine.process_shard(pipeline_named('transactions'), shard, 'r', {out!r}, b'k')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    staging = tmp_path / "out" / "_staging" / "r"
    deadline = time.monotonic() + 60
    while not any(staging.rglob("*.parquet")):
        assert child.poll() is None and time.monotonic() < deadline, (
            "the shard finished before it could be killed"
        )
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    visible = [
        p
        for p in (tmp_path / "out").rglob("*")
        if p.is_file() and not {"_staging", "metadata"} & set(p.parts)
    ]
    assert visible == [] and no_snapshot()
    result = engine.process_shard(pipeline, shard, "r", str(tmp_path / "out"), KEY)
    manifest = engine.commit(pipeline, CommitRequest("r", (result,), str(tmp_path / "out"), {}, key=KEY))
    assert manifest.rows_in == 400_000 == stored(tmp_path / "out").num_rows + manifest.rows_quarantined


def test_a_breaking_contract_change_without_a_new_major_version_is_refused(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    generate(200, "csv", 0.0, tmp_path / "in")
    run(pipeline, tmp_path / "in", tmp_path / "out")
    dropped = pipeline.contract.model_copy(
        update={"columns": pipeline.contract.columns[:-1], "version": "1.1.0"}  # memo removed
    )
    with pytest.raises(tables.ContractChanged, match=r"column memo removed.*new major version"):
        engine.discover(
            pipeline.model_copy(update={"contract": dropped}),
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            True,
        )
    renamed = pipeline.contract.model_copy(
        update={"columns": pipeline.contract.columns[:-1], "version": "2.0.0"}
    )
    assert engine.discover(
        pipeline.model_copy(update={"contract": renamed}), str(tmp_path / "in"), str(tmp_path / "out"), True
    )

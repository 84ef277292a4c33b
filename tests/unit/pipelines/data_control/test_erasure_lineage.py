"""Erasure follows the subject everywhere the platform copied it, and keeps it out: one subject
in 6 stored rows over two runs, split 80/10/10, sampled, exported to S3 after each run; then
``dataset_erase`` with the address typed differently, and a replay of every input."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_control import erasure, sampling
from base_platform.pipelines.data_distribution import publishing
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.data_storage import quarantine, tables
from base_platform.pipelines.pipeline_management.engine import ERASED
from base_platform.pipelines.spec import Pipeline, S3Target, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import KEY, run
from tests.unit.pipelines.test_erase import SUBJECT, subject_file

PSEUDONYM = hmac.new(KEY, SUBJECT.encode(), hashlib.sha256).digest()
NEIGHBOUR = "x" + SUBJECT  # another person, whose address contains the subject's


def exporting(tmp_path: Path) -> tuple[Pipeline, S3Target]:
    pipeline = pipeline_named("transactions")
    target = S3Target(target="s3", name="exports", uri=str(tmp_path / "exports"))
    spec = pipeline.spec.model_copy(update={"distribution": (target,)})
    return pipeline.model_copy(update={"spec": spec}), target


def holding(root: Path, needle: bytes) -> list[Path]:
    """Files under ``root`` (not the inputs) whose bytes, or decoded Parquet values, hold ``needle``."""
    found = []
    for path in (p for p in root.rglob("*") if p.is_file() and not p.parent.name.startswith("in")):
        if needle in path.read_bytes() or (
            path.suffix == ".parquet"
            and any(needle in column.to_pylist() for column in pq.read_table(path).columns)
        ):
            found.append(path)
    return found


def publish(pipeline: Pipeline, target: S3Target, snapshot_id: int | None) -> dict[str, Any]:
    table = tables.load("transactions")
    assert table is not None and snapshot_id is not None
    return publishing.export_s3(pipeline, table, snapshot_id, target)


@pytest.mark.slow
def test_erasure_reaches_samples_splits_and_exports_and_a_replay_never_brings_the_subject_back(
    tmp_path: Path,
) -> None:
    pipeline, target = exporting(tmp_path)
    for number in (1, 2):
        generate(300, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        subject_file(tmp_path / f"in{number}", number, 3)
        neighbour = (tmp_path / f"in{number}" / f"subject-{number}.csv").read_text()
        (tmp_path / f"in{number}" / f"neighbour-{number}.csv").write_text(
            neighbour.replace(SUBJECT, NEIGHBOUR).replace("tx-s", "tx-n")
        )
        publish(
            pipeline,
            target,
            run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}").snapshot_id,
        )
    sampling.split(pipeline, "80/10/10")
    sampling.sample(pipeline, "50%")
    assert holding(tmp_path, PSEUDONYM)  # the subject is everywhere to start with

    report = erasure.erase(pipeline, "  Erase.Me@Example.COM ", KEY, who="dpo", request="gdpr-1")
    publish(pipeline, target, report["snapshot_id"])  # as the erasure's asset event makes it run

    assert report["rows_removed"] == 6
    made = report["tables_made_from_it"]
    assert sum(made[f"transactions__{cut}"]["rows_removed"] for cut in ("train", "validation", "test")) == 6
    assert holding(tmp_path, PSEUDONYM) == []
    unsealed = list(quarantine.records(pipeline, str(tmp_path / "out"), KEY))
    fields = [[*r.values(), *quarantine.raw_fields(r.get("_raw") or "")] for r in unsealed]
    assert not any(SUBJECT in values for values in fields)
    assert sum(NEIGHBOUR in (r.get("_raw") or "") for r in unsealed) == 2  # exact, not a substring

    replayed = run(pipeline, tmp_path / "in1", tmp_path / "out", "replay", full=True)
    assert replayed.rows_in == replayed.rows_stored + replayed.rows_quarantined
    records = list(quarantine.records(pipeline, str(tmp_path / "out"), KEY, run="replay"))
    erased = [r for r in records if r["_reason"] == ERASED]
    assert len(erased) == 5  # 3 rows, a bad amount, a line that cannot be split: counted, no value kept
    assert all(v is None for r in erased for name, v in r.items() if name not in ("_reason", "_source"))
    assert holding(tmp_path, PSEUDONYM) == []


@pytest.mark.slow
def test_an_erasure_expires_only_the_snapshots_that_held_the_subject(tmp_path: Path) -> None:
    pipeline = pipeline_named("transactions")
    generate(300, "csv", 0.0, tmp_path / "in1", seed=1)
    clean = run(pipeline, tmp_path / "in1", tmp_path / "out", "run-1").snapshot_id
    generate(300, "csv", 0.0, tmp_path / "in2", seed=2)
    subject_file(tmp_path / "in2", 2, 2)
    held = run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2").snapshot_id
    report = erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-2")
    assert report["snapshots_expired"] == [held]
    table = tables.load("transactions")
    assert table is not None and clean is not None and table.snapshot_by_id(clean) is not None  # kept


def test_canonical_forms_are_one_pseudonym_for_one_person() -> None:
    import pyarrow as pa

    emails = pa.array(["A.B@Example.COM", " a.b@example.com ", None])
    assert protection.canonical(emails, "email").to_pylist() == ["a.b@example.com", "a.b@example.com", None]
    phones = pa.array(["+49 151 000-1", "0049 151 0001", "(0151) 0001", "1", "12.50"])
    canonical = protection.canonical(phones, "phone").to_pylist()
    assert canonical == ["+491510001", "+491510001", "01510001", "1", "12.50"]  # an amount is no phone


@pytest.mark.slow
def test_a_run_that_read_before_an_erasure_commits_without_the_subject(tmp_path: Path) -> None:
    """The erasure lands while a run's shards are staged: its commit drops the subject's rows
    and blanks its quarantined records, and every row stays counted."""
    from base_platform.pipelines.pipeline_management import engine
    from base_platform.pipelines.run_records import CommitRequest

    pipeline, out = pipeline_named("transactions"), tmp_path / "out"
    generate(300, "csv", 0.0, tmp_path / "in1", seed=1)
    subject_file(tmp_path / "in1", 1, 2)
    run(pipeline, tmp_path / "in1", out, "run-1")
    generate(300, "csv", 0.0, tmp_path / "in2", seed=2)
    subject_file(tmp_path / "in2", 2, 3)
    shards = engine.discover(pipeline, str(tmp_path / "in2"), str(out), False)
    staged = [engine.process_shard(pipeline, shard, "run-2", str(out), KEY) for shard in shards]
    erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-3")  # meanwhile
    request = CommitRequest("run-2", tuple(staged), str(out), {"start": None, "end": None}, key=KEY)
    record = engine.commit(pipeline, request)
    assert record.rows_in == record.rows_stored + record.rows_quarantined == sum(r.rows_in for r in staged)
    assert holding(tmp_path, PSEUDONYM) == []
    reasons = [r["_reason"] for r in quarantine.records(pipeline, str(out), KEY, run="run-2")]
    assert reasons.count(ERASED) >= 3 + 1  # the 3 stored rows, and the quarantined bad amount


@pytest.mark.slow
def test_a_subject_in_hundreds_of_multi_value_rows_is_erased(tmp_path: Path) -> None:
    """An address on 700 documents (a shared mailbox): one expression per holding row used to
    chain 700 deep, past what pyiceberg's visitors can recurse through."""
    import pyarrow as pa

    subject, other = bytes(range(32)), bytes(range(1, 33))
    rows = pa.table(
        {
            "sha256": pa.array([f"doc-{n}" for n in range(1000)]),
            "emails": pa.array(
                [[subject, other] if n < 700 else [other] for n in range(1000)], pa.list_(pa.binary())
            ),
        }
    )
    catalog = tables.catalog()
    catalog.create_namespace_if_not_exists(tables.NAMESPACE)
    table = catalog.create_table(
        tables.identifier("mailbox"), rows.schema, location=str(tmp_path / "mailbox")
    )
    table.append(rows)
    report = erasure.erase_rows(table.refresh(), {"emails": [subject]}, "r-1", ("sha256",))
    assert report["rows_removed"] == 700
    left = table.refresh().scan().to_arrow()
    assert left.num_rows == 300 and all(subject not in row for row in left.column("emails").to_pylist())

"""dataset_erase on real tables: the subject's rows leave the table, its history and the quarantine,
and no byte the platform wrote still holds the subject's pseudonym."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_control import erasure, table_actions
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import KEY, run

SUBJECT = "erase.me@example.com"
HEADER = (
    "transaction_id,account_id,event_time,amount,currency,merchant,merchant_country,"
    "channel,customer_email,customer_phone,card_last4,status,memo\n"
)


def subject_file(folder: Path, run_number: int, good: int) -> None:
    """Rows of the subject: ``good`` valid ones, one with a bad amount and one line that cannot be
    split (both quarantined), among another customer's rows."""
    lines = [
        f"tx-s{run_number}-{i},acc-1,2026-11-2{i % 5}T10:00:00Z,12.50,EUR,Shop,DE,pos,{email},+491234,1234,"
        "approved,\n"
        for i, email in enumerate([SUBJECT] * good + ["someone.else@example.com"] * 3)
    ]
    lines.append(
        f"tx-s{run_number}-bad,acc-1,2026-11-24T10:00:00Z,abc,EUR,Shop,DE,pos,{SUBJECT},,,approved,\n"
    )
    lines.append(
        f"tx-s{run_number}-raw,acc-1,2026-11-24T10:00:00Z,1.00,EUR,{SUBJECT},DE,pos,,,,approved,,x,y\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"subject-{run_number}.csv").write_text(HEADER + "".join(lines))


def two_runs_holding_the_subject(pipeline: Pipeline, tmp_path: Path) -> None:
    """Three of the subject's rows in the table, four of its records in the quarantine."""
    for number, good in ((1, 2), (2, 1)):
        generate(300, "csv", 0.05, tmp_path / f"in{number}", seed=number)
        subject_file(tmp_path / f"in{number}", number, good)
        run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}")


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


@pytest.fixture
def erased(pipeline: Pipeline, tmp_path: Path) -> dict[str, Any]:
    two_runs_holding_the_subject(pipeline, tmp_path)
    assert len(table_actions.read_dataset("transactions").filter(_is_subject_filter())) == 3
    # a third run's snapshot waits on the audit branch (its breaker tripped): the subject is there too
    generate(300, "csv", 0.25, tmp_path / "in3", seed=3)
    subject_file(tmp_path / "in3", 3, 1)
    assert run(pipeline, tmp_path / "in3", tmp_path / "out", "run-3").published is False
    return erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-2026-0042")


def _digest() -> bytes:
    return hmac.new(KEY, SUBJECT.encode(), hashlib.sha256).digest()


def _is_subject_filter() -> Any:
    import pyarrow.compute as pc

    return pc.equal(pc.field("customer_email"), _digest())


@pytest.mark.slow
def test_erase_removes_the_subject_from_the_table_and_the_quarantine(
    erased: dict[str, Any], tmp_path: Path
) -> None:
    assert erased["rows_removed"] == 3
    assert erased["quarantine_rows_removed"] == 6  # a bad amount and an unsplit line, in each run
    table = table_actions.dataset_table("transactions")
    assert erased["audit_dropped"] not in {None, *(s.snapshot_id for s in table.snapshots())}
    current = table_actions.read_dataset("transactions")
    assert len(current.filter(_is_subject_filter())) == 0
    assert current.num_rows > 500  # the other customers stay
    assert set(current.column("customer_email").to_pylist()) >= {
        hmac.new(KEY, b"someone.else@example.com", hashlib.sha256).digest()
    }
    table = table_actions.dataset_table("transactions")
    assert all(s.snapshot_id not in erased["snapshots_expired"] for s in table.snapshots())
    assert erased["files_deleted"] > 0


@pytest.mark.slow
def test_no_file_the_platform_wrote_still_holds_the_subject(erased: dict[str, Any], tmp_path: Path) -> None:
    """Every byte under the warehouse and the catalog: raw, then decoded (Parquet values, Avro manifests),
    because compressed pages would hide a value from a byte scan."""
    from pyiceberg.manifest import ManifestContent, ManifestFile

    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.parent.name.startswith("in")]
    assert any(p.suffix == ".avro" for p in written) and any(p.suffix == ".parquet" for p in written)
    io = table_actions.dataset_table("transactions").io
    for path in written:
        data = path.read_bytes()
        assert _digest() not in data and SUBJECT.encode() not in data, path
        if path.suffix == ".parquet":
            for column in pq.read_table(path).columns:
                values = column.to_pylist()
                assert _digest() not in values, path
                assert not any(isinstance(v, str | bytes) and SUBJECT in str(v) for v in values), path
        if path.suffix == ".avro" and not path.name.startswith("snap-"):
            manifest = ManifestFile.from_args(
                manifest_path=str(path), manifest_length=len(data), partition_spec_id=0,
                content=ManifestContent.DATA, sequence_number=0, min_sequence_number=0, added_snapshot_id=0,
            )  # fmt: skip
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
                bounds = {**(entry.data_file.lower_bounds or {}), **(entry.data_file.upper_bounds or {})}
                assert not any(_digest()[:16] in bytes(v) for v in bounds.values()), path


@pytest.mark.slow
def test_the_audit_names_the_request_never_the_subject(erased: dict[str, Any]) -> None:
    table = table_actions.dataset_table("transactions")
    (entry,) = json.loads(table.properties[erasure.ERASURES_PROPERTY])
    assert (entry["request"], entry["who"], entry["rows_removed"]) == ("gdpr-2026-0042", "dpo", 3)
    for record in (json.dumps(erased), json.dumps(dict(table.properties))):
        assert SUBJECT not in record and _digest().hex() not in record


@pytest.mark.slow
def test_a_second_erase_finds_nothing_and_discover_still_skips_erased_runs(
    pipeline: Pipeline, erased: dict[str, Any], tmp_path: Path
) -> None:
    from base_platform.pipelines.pipeline_management import engine

    again = erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-2026-0043")
    assert (again["rows_removed"], again["quarantine_rows_removed"], again["snapshots_expired"]) == (0, 0, [])
    audit = json.loads(table_actions.dataset_table("transactions").properties[erasure.ERASURES_PROPERTY])
    requests = [(e["request"], e["rows_removed"]) for e in audit]
    assert requests == [("gdpr-2026-0042", 3), ("gdpr-2026-0043", 0)]
    # The expired snapshots' inputs were carried over: a rerun of the same inputs adds nothing.
    table = table_actions.dataset_table("transactions")
    assert set(tables.committed_inputs(table).values()) == {"run-1", "run-2"}
    assert [h.run for h in tables.history(table)] == ["run-1", "run-2"]
    for number in (1, 2):
        assert engine.discover(pipeline, str(tmp_path / f"in{number}"), str(tmp_path / "out"), False) == []


@pytest.mark.slow
def test_a_retried_erase_reports_what_the_first_attempt_removed(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's first attempt dies after its delete committed (here in the quarantine step): the
    retry finds none of the subject's rows left, yet its report and the one audit entry say what the
    request removed, and the consumers hear of the erasure (control_dag announces rows_removed)."""
    from base_platform.pipelines.data_storage import quarantine

    two_runs_holding_the_subject(pipeline, tmp_path)
    real_erase = quarantine.erase_quarantined

    def worker_lost(*args: Any, **kwargs: Any) -> dict[str, int]:
        raise ConnectionError("the worker's connection dropped")

    monkeypatch.setattr(quarantine, "erase_quarantined", worker_lost)
    with pytest.raises(ConnectionError):
        erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-7")
    assert (
        len(table_actions.read_dataset("transactions").filter(_is_subject_filter())) == 0
    )  # the delete landed
    monkeypatch.setattr(quarantine, "erase_quarantined", real_erase)
    retried = erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-7")
    assert (retried["rows_removed"], retried["quarantine_rows_removed"]) == (3, 4)
    again = erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="gdpr-7")
    assert (again["rows_removed"], again["quarantine_rows_removed"], again["snapshots_expired"]) == (3, 0, [])
    audit = json.loads(table_actions.dataset_table("transactions").properties[erasure.ERASURES_PROPERTY])
    assert [(e["request"], e["rows_removed"]) for e in audit] == [("gdpr-7", 3)]


def test_erase_needs_the_key_of_a_dataset_with_hmac_columns(pipeline: Pipeline) -> None:
    with pytest.raises(table_actions.ControlError, match="needs its key"):
        erasure.erase(pipeline, SUBJECT, None, who="dpo", request="r")


@pytest.mark.slow
def test_no_rollback_past_runs_an_erasure_expired(pipeline: Pipeline, tmp_path: Path) -> None:
    """The subject only in run-2: run-1's snapshot survives the erasure, run-2's does not."""
    records = []
    for number in (1, 2):
        generate(300, "csv", 0.0, tmp_path / f"in{number}", seed=number)
        if number == 2:
            subject_file(tmp_path / "in2", 2, 1)
        records.append(run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}"))
    erased = erasure.erase(pipeline, SUBJECT, KEY, who="dpo", request="r-1")
    assert erased["snapshots_expired"] == [records[1].snapshot_id]
    # run-2's snapshot is gone, so the lineage ends at the erasure: run-1 is no longer an ancestor
    assert records[0].snapshot_id is not None
    with pytest.raises(table_actions.ControlError, match="is not an ancestor"):
        table_actions.rollback("transactions", records[0].snapshot_id, dry_run=True, who="ops", why="test")

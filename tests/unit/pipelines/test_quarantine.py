"""No protected value is stored in clear, quarantine included; an authorised user can still
read, fix and replay quarantined rows, and replayed rows are counted once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from base_platform.pipelines.data_storage import quarantine
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import KEY, run

BAD_EMAIL = "alice.private@example"  # no top-level domain: fails the spec's e-mail rule
BAD_PHONE = "+4917012345678"
RAW_LINE_EMAIL = "bob.unsplittable@example.com"


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def faulty_input(folder: Path, pipeline: Pipeline) -> set[str]:
    """Generated rows (1% corrupt), a row whose protected e-mail breaks a rule, and a line that
    cannot be split into columns; returns every e-mail and phone number in them."""
    generate(3000, "csv", 0.01, folder, files=2)
    names = list(pipeline.contract.names)
    first = sorted(folder.glob("*.csv"))[0]
    rows = list(csv.reader(io.StringIO(first.read_text(errors="surrogateescape"))))
    bad = list(rows[1])
    bad[names.index("transaction_id")] = "t-quarantine-1"
    bad[names.index("customer_email")], bad[names.index("customer_phone")] = BAD_EMAIL, BAD_PHONE
    with first.open("a", newline="") as out:
        csv.writer(out, lineterminator="\n").writerow(bad)
        out.write(f"only,three,{RAW_LINE_EMAIL}\n")
    values: set[str] = set()
    for path in folder.glob("*.csv"):
        for row in csv.DictReader(io.StringIO(path.read_text(errors="surrogateescape"))):
            values |= {row[c] for c in ("customer_email", "customer_phone") if row.get(c)}
    return values | {RAW_LINE_EMAIL}


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_no_protected_value_is_written_in_clear_anywhere(pipeline: Pipeline, tmp_path: Path) -> None:
    """Data, quarantine (rows and whole lines), manifests and index: scanned as raw bytes."""
    protected = faulty_input(tmp_path / "in", pipeline)
    manifest = run(pipeline, tmp_path / "in", tmp_path / "out")
    assert manifest.rows_quarantined >= 2 and (tmp_path / "out" / "_quarantine").is_dir()
    written = every_byte(tmp_path / "out")
    assert len(protected) > 1000
    leaked = sorted(value for value in protected if value.encode() in written)
    assert leaked == []


def test_an_authorised_user_shows_fixes_and_replays_quarantined_rows_once(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faulty_input(tmp_path / "in", pipeline)
    first = run(pipeline, tmp_path / "in", tmp_path / "out", "run-1")
    shown = list(quarantine.records(pipeline, str(tmp_path / "out"), KEY, "run-1"))
    assert len(shown) == first.rows_quarantined
    [bad] = [r for r in shown if r["transaction_id"] == "t-quarantine-1"]
    assert (bad["customer_email"], bad["customer_phone"]) == (BAD_EMAIL, BAD_PHONE)  # unsealed
    assert bad["_reason"].startswith("customer_email: does not match")
    assert any(r["_raw"] and RAW_LINE_EMAIL in r["_raw"] for r in shown)

    fixed = tmp_path / "fixed.csv"
    fixed.write_text(quarantine.show_csv(pipeline, [bad | {"customer_email": "alice@example.com"}]))
    monkeypatch.setattr("base_platform.pipelines.data_security.protection.load_key", lambda security: KEY)
    arguments = ["--pipeline", pipeline.spec.name, "--run", "run-1", "--target-uri", str(tmp_path / "out")]
    arguments += ["--source-uri", str(tmp_path / "in"), "--fixed", str(fixed)]
    assert quarantine.main(["replay", *arguments]) == 0
    assert quarantine.main(["replay", *arguments]) == 0  # the same rows again: the same file
    replayed = run(pipeline, tmp_path / "in", tmp_path / "out", "run-2")
    assert (replayed.rows_in, replayed.rows_stored, replayed.rows_quarantined) == (1, 1, 0)
    assert engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False) == []


def test_a_protected_quarantine_needs_the_key() -> None:
    from base_platform.files import Location
    from base_platform.pipelines.data_storage import staging_writer

    pipeline = pipeline_named("transactions")
    with pytest.raises(ValueError, match="needs the pipeline's key"):
        staging_writer.QuarantineWriter(
            Location.of("/tmp"),
            "/tmp/q.parquet",
            ["customer_email"],
            "s",
            pipeline.spec.security,
            None,
        )

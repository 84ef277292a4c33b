"""A document's e-mails are protected one by one: a PDF made here with two addresses in mixed case
(one in its text, one as its author) is erased by either of them, typed in yet another case,
and a document with only the other address stays. Two runs, so an older snapshot holds it too."""

from __future__ import annotations

import hashlib
import hmac
import io
from pathlib import Path

import pytest

from base_platform.pipelines.data_control import erasure
from base_platform.pipelines.data_storage import quarantine, tables
from base_platform.pipelines.pipeline_management.engine import ERASED
from base_platform.pipelines.spec import pipeline_named
from tests.unit.pipelines.data_control.test_erasure_lineage import holding
from tests.unit.pipelines.test_engine import KEY
from tests.unit.pipelines.test_multimodal import run

JANE, BOB = "Jane.Doe@Example.ORG", "Bob.Smith@example.org"


@pytest.fixture(autouse=True)
def _root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_PIPELINES_ROOT", str(tmp_path / "root"))


def pdf(text: str, author: str) -> bytes:
    """One Helvetica page of ``text`` and an Info dictionary naming ``author``."""
    import pypdf
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(width=612, height=792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    content = DecodedStreamObject()
    content.set_data(f"BT /F1 11 Tf 72 720 Td ({text}) Tj ET".encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(content)
    writer.add_metadata({"/Author": author, "/Title": "Claim"})
    sink = io.BytesIO()
    writer.write(sink)
    return sink.getvalue()


def emails_by_file() -> dict[str, list[bytes] | None]:
    table = tables.load("documents")
    assert table is not None
    return {Path(row["file"]).name: row["emails"] for row in table.scan().to_arrow().to_pylist()}


def pseudonym(value: str) -> bytes:
    return hmac.new(KEY, value.encode(), hashlib.sha256).digest()


@pytest.mark.slow
def test_a_document_is_erased_by_any_of_its_addresses_in_any_case(tmp_path: Path) -> None:
    pipeline = pipeline_named("documents")
    (tmp_path / "in1").mkdir()
    (tmp_path / "in1" / "both.pdf").write_bytes(pdf(f"Please write to {JANE} about the claim.", BOB))
    (tmp_path / "in1" / "bob.pdf").write_bytes(pdf(f"Only {BOB.upper()} signed this one.", "Claims desk"))
    run(pipeline, tmp_path / "in1", tmp_path / "out", "run-1")
    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "later.pdf").write_bytes(pdf(f"And {BOB} again, later on.", "Claims desk"))
    run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2")
    stored = emails_by_file()
    jane, bob = pseudonym(JANE.lower()), pseudonym(BOB.lower())  # each address canonical, alone
    assert sorted(stored["both.pdf"] or []) == sorted([jane, bob]) and stored["bob.pdf"] == [bob]
    assert holding(tmp_path, jane)

    report = erasure.erase(pipeline, " jane.DOE@example.org", KEY, who="dpo", request="gdpr-10")

    assert report["rows_removed"] == 1
    after = emails_by_file()
    assert after == {"bob.pdf": [bob], "later.pdf": [bob]}  # the other person's documents stay
    for needle in (
        jane,
        pseudonym(JANE),
        pseudonym(" jane.DOE@example.org"),
        JANE.encode(),
        JANE.lower().encode(),
    ):
        assert holding(tmp_path, needle) == [], needle
    assert holding(tmp_path, bob)

    (tmp_path / "in3").mkdir()  # Jane and Bob again: ingest drops it, by Jane's address alone
    (tmp_path / "in3" / "again.pdf").write_bytes(pdf(f"Reminder: {JANE.upper()} still waits.", BOB))
    record, _ = run(pipeline, tmp_path / "in3", tmp_path / "out", "run-3")
    assert (record.rows_in, record.rows_stored) == (1, 0)
    reasons = [r["_reason"] for r in quarantine.records(pipeline, str(tmp_path / "out"), KEY, run="run-3")]
    assert reasons == [ERASED]
    assert holding(tmp_path, jane) == []


@pytest.mark.slow
def test_the_second_address_erases_the_document_too(tmp_path: Path) -> None:
    pipeline = pipeline_named("documents")
    (tmp_path / "in1").mkdir()
    (tmp_path / "in1" / "both.pdf").write_bytes(pdf(f"Please write to {JANE} about the claim.", BOB))
    run(pipeline, tmp_path / "in1", tmp_path / "out", "run-1")
    report = erasure.erase(pipeline, BOB.upper(), KEY, who="dpo", request="gdpr-11")
    assert report["rows_removed"] == 1
    assert (
        holding(tmp_path, pseudonym(BOB.lower())) == [] and holding(tmp_path, pseudonym(JANE.lower())) == []
    )


def test_the_api_shows_each_digest_of_a_multi_value_column_as_hex() -> None:
    import pyarrow as pa

    from base_platform.pipelines.data_distribution import serving

    rows = pa.table({"emails": pa.array([[pseudonym(JANE), pseudonym(BOB)], None], pa.list_(pa.binary(32)))})
    assert serving.to_json_rows(rows) == [
        {"emails": [pseudonym(JANE).hex(), pseudonym(BOB).hex()]},
        {"emails": None},
    ]


@pytest.mark.slow
def test_a_table_of_joined_digests_is_refused_until_it_is_rebuilt(tmp_path: Path) -> None:
    """A table made before the spec split ``emails`` (one digest of the joined values) cannot
    take lists: the run says so instead of failing in the middle of its commit."""
    from base_platform.pipelines.data_storage.tables import TableMismatch

    pipeline = pipeline_named("documents")
    rule = pipeline.spec.security.columns["emails"].model_copy(update={"separator": None})
    security = pipeline.spec.security.model_copy(
        update={"columns": {**pipeline.spec.security.columns, "emails": rule}}
    )
    before = pipeline.model_copy(update={"spec": pipeline.spec.model_copy(update={"security": security})})
    (tmp_path / "in1").mkdir()
    (tmp_path / "in1" / "both.pdf").write_bytes(pdf(f"Please write to {JANE} about the claim.", BOB))
    run(before, tmp_path / "in1", tmp_path / "out", "run-1")
    (tmp_path / "in2").mkdir()
    (tmp_path / "in2" / "later.pdf").write_bytes(pdf(f"And {BOB} again, later on.", "Claims desk"))
    with pytest.raises(TableMismatch, match="stores emails with another `separator`"):
        run(pipeline, tmp_path / "in2", tmp_path / "out", "run-2")

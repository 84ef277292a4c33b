"""Each BASE module stage alone, on small Arrow data."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import itertools
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from base_platform import files
from base_platform.files import Location, read_batches
from base_platform.pipelines.data_ingestion import decoding
from base_platform.pipelines.data_ingestion.sources.files import file_source
from base_platform.pipelines.data_quality import quality_rules, table_keys
from base_platform.pipelines.data_security import hashing, protection
from base_platform.pipelines.data_storage import staging_writer
from base_platform.pipelines.quality_monitoring import anomalies
from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import (
    Column,
    Contract,
    Protection,
    Range,
    Security,
    Unique,
    pipeline_named,
)

CONTRACT = Contract.model_validate(
    {
        "name": "t",
        "version": "1.0.0",
        "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "string", "nullable": False},
            {"name": "amount", "type": "decimal(6,2)"},
            {"name": "at", "type": "timestamp", "format": "%Y-%m-%dT%H:%M:%SZ"},
            {"name": "n", "type": "int64"},
            {"name": "ok", "type": "bool"},
            {"name": "day", "type": "date"},
            {"name": "cur", "type": "string", "allowed": ["EUR", "USD"]},
        ],
    }
)


def raw(rows: list[list[bytes | None]]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(c, pa.binary()) for c in columns], schema=decoding.raw_schema(CONTRACT.names)
    )


def reasons(findings: Findings) -> list[str]:
    bad = pa.array(np.flatnonzero(findings.bad().to_numpy(zero_copy_only=False)))
    found: list[str] = findings.reasons(bad).to_pylist()
    return found


def test_contract_types_good_rows_and_names_every_bad_value() -> None:
    batch = raw(
        [
            [b"a", b"1234.50", b"2026-11-26T10:00:00Z", b"7", b"true", b"2026-11-26", b"EUR"],
            [None, b"12,50", b"2026-13-45T99:00:00Z", b"x", b"yes", b"26.11.2026", b"XYZ"],
            [b"c", b"12345.1", None, None, None, None, None],
            [b"d\xff", b"-1.5", b"2026-11-26T10:00:00Z", b"-3", b"false", b"2026-01-01", b"USD"],
        ]
    )
    findings = Findings(4)
    typed = conformance.conform(batch, CONTRACT, findings)
    assert typed.column("amount")[0].as_py() == pytest.approx(1234.5)
    assert typed.column("at")[0].as_py() == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert typed.column("ok").to_pylist()[0] is True and typed.column("n")[3].as_py() == -3
    assert findings.bad().to_pylist() == [False, True, True, True]
    second, third, fourth = reasons(findings)
    for expected in (
        "id: missing",
        "amount: not a decimal(6,2)",
        "at: not a timestamp",
        "n: not a int64",
        "ok: not a bool",
        "day: not a date",
        "cur: not one of",
    ):
        assert expected in second
    assert third == "amount: not a decimal(6,2)"  # 5 whole digits do not fit decimal(6,2)
    assert fourth == "id: invalid UTF-8"


@pytest.mark.parametrize(
    ("values", "too_long"),
    [
        (["abcd", None], [False, False]),  # no value has more than 4 bytes: characters are not counted
        (["abcd", "\u00e9\u00e9\u00e9\u00e9", None], [False, False, False]),  # 8 bytes, 4 characters
        (["abcd", "abcde", "\u00e9\u00e9\u00e9\u00e9\u00e9"], [False, True, True]),
    ],
)
def test_max_length_counts_characters_not_bytes(values: list[str | None], too_long: list[bool]) -> None:
    column = Column.model_validate({"name": "s", "type": "string", "max_length": 4})
    findings = Findings(len(values))
    conformance._constrain(
        pa.array(values, pa.string()), pa.array([v is None for v in values]), column, findings
    )
    assert findings.bad().to_pylist() == too_long


def test_invalid_utf8_is_found_per_value_and_agrees_with_python() -> None:
    samples = [b"ok", "h\u00e9llo \u20ac\U0001d11e".encode(), b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf"]
    samples += [b"\xf4\x90\x80\x80", "\u65e5\u672c".encode(), b'a,\n"b"', b"\xe2\x82"]
    values = pa.array([b"ok"] * 1000 + samples + [None], pa.binary())
    text, bad = conformance.as_text(values)
    assert text is None and bad is not None
    expected = [False] * 1000 + [not _decodes(sample) for sample in samples] + [False]  # null: no finding
    assert bad.to_pylist() == expected
    assert conformance.not_utf8(values.slice(997)).to_pylist() == expected[997:]  # a slice of a batch
    text, bad = conformance.as_text(pa.array([b"fine", None], pa.binary()))
    assert bad is None and text is not None and text.to_pylist() == ["fine", None]


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    "values",
    [
        ["EUR", "usd", None, "GBP", "EU"] * 400,  # repeats: matched once per distinct value
        [f"{n:03d}" if n % 7 else f"x{n}" for n in range(2000)] + [None],  # distinct: matched per row
    ],
)
def test_pattern_matching_agrees_with_re2_per_row_on_repeating_and_distinct_columns(
    values: list[str | None],
) -> None:
    array = pa.array(values, pa.string()).slice(1)
    for pattern in ("^[A-Z]{3}$", "^[0-9]{3}$"):
        expected = pc.match_substring_regex(array, pattern)
        assert conformance.matches(array, pattern).to_pylist() == expected.to_pylist()


def test_unique_keys_flag_repeats_within_and_across_batches() -> None:
    keys = quality_rules.UniqueKeys()
    assert keys.duplicates(np.array([5, 6, 5], dtype=np.uint64)).tolist() == [False, False, True]
    assert keys.duplicates(np.array([7, 6, 8], dtype=np.uint64)).tolist() == [False, True, False]


def test_unique_keys_agree_with_a_set_over_many_batches() -> None:
    """The sorted runs merge as batches arrive; a plain set of the keys must agree throughout."""
    generator = np.random.default_rng(7)
    keys, reference = quality_rules.UniqueKeys(), set()
    for _ in range(300):
        batch = generator.integers(0, 2_000, generator.integers(0, 40), dtype=np.uint64)
        expected = []
        for value in batch.tolist():
            expected.append(value in reference)
            reference.add(value)
        assert keys.duplicates(batch).tolist() == expected
    assert keys.sorted_keys().tolist() == sorted(reference)


def test_key_files_read_back_any_range_of_buckets(tmp_path: Path) -> None:
    keys = np.sort(np.random.default_rng(5).integers(0, 2**64, 1000, dtype=np.uint64))
    location = Location.of(str(tmp_path))
    table_keys.write_keys(location, "k/keys.u64", keys)
    offsets = table_keys.read_key_offsets(location, "k/keys.u64")
    assert offsets[-1] == 1000 and np.all(np.diff(offsets) >= 0)
    top = (keys >> np.uint64(56)).astype(np.int64)
    for first, end in [(0, 256), (0, 1), (17, 18), (100, 200), (255, 256)]:
        read = table_keys.read_keys(location, "k/keys.u64", offsets[first], offsets[end])
        assert read.tolist() == keys[(top >= first) & (top < end)].tolist()


def written_rows(files: list[str]) -> list[dict[str, object]]:
    """Every row of ``files``, in a stable order."""
    import pyarrow.dataset as ds

    return sorted(ds.dataset(files, format="parquet").to_table().to_pylist(), key=lambda row: str(row["n"]))


def test_the_writer_keeps_only_kept_rows_grouped_into_hive_folders_and_files_of_bounded_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setattr(staging_writer, "PENDING_ROWS", 50)  # many partitions: queues flush early
    monkeypatch.setattr(staging_writer, "OPEN_FILES", 3)  # and files are finished early
    schema = pa.schema([("n", pa.int64()), ("k", pa.string()), ("digest", pa.binary(32))])
    location = Location.of(str(tmp_path))
    batches, expected = [], []
    for start in range(0, 300, 60):
        numbers = list(range(start, start + 60))
        keys = [None if n % 13 == 0 else f"a/b {n % 11}" for n in numbers]  # needs escaping; some null
        keep = [n % 5 != 0 for n in numbers]
        digests = [n.to_bytes(32, "big") for n in numbers]
        arrays = [pa.array(numbers), pa.array(keys), pa.array(digests, pa.binary(32))]
        batches.append((pa.RecordBatch.from_arrays(arrays, schema=schema), pa.array(keep)))
        expected += [
            {"n": n, "k": k, "digest": d}
            for n, k, d, ok in zip(numbers, keys, digests, keep, strict=True)
            if ok
        ]
    with staging_writer.PartitionedWriter(
        location, "data", schema, ("k",), "part", rows_per_file=7
    ) as writer:
        for batch, keep_rows in batches:
            writer.write(batch, keep_rows)
            assert sum(map(staging_writer._rows, writer.pending.values())) <= 50 and len(writer.open) <= 3
        files = writer.close()

    assert written_rows(files) == sorted(expected, key=lambda row: str(row["n"]))
    assert {path.split("/")[-2] for path in files} == {"k=__HIVE_DEFAULT_PARTITION__"} | {
        f"k=a%2Fb%20{n}" for n in range(11)
    }
    for path in files:
        metadata = pq.read_metadata(path)
        # k is in the path and in the file: Iceberg reads a file's partition from its statistics
        assert 0 < metadata.num_rows <= 7 and metadata.schema.names == ["n", "k", "digest"]
        column = {
            metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i) for i in (0, 2)
        }
        assert (column["n"].compression, column["digest"].compression) == ("ZSTD", "UNCOMPRESSED")


def test_a_file_is_replaced_a_batch_at_a_time_and_removed_when_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    monkeypatch.setattr(files, "READ_BATCH_ROWS", 128)
    location, folder = Location.of(str(tmp_path)), tmp_path / "data"
    folder.mkdir()
    table = pa.table({"id": [f"r{n}" for n in range(1000)], "n": list(range(1000))})
    pq.write_table(table, folder / "f.parquet", row_group_size=300)
    batches = read_batches(location, "data/f.parquet")
    assert [batch.num_rows for batch in batches] == [128] * 7 + [104]  # never the whole file at once

    odd = (
        batch.filter(pc.equal(pc.bit_wise_and(batch["n"], 1), 1))
        for batch in read_batches(location, "data/f.parquet")
    )
    staging_writer.replace_file(location, "data/f.parquet", odd)
    assert pq.read_table(folder / "f.parquet") == table.filter(pa.array([n % 2 == 1 for n in range(1000)]))
    assert [p.name for p in folder.iterdir()] == ["f.parquet"]  # nothing left beside it

    nothing = (batch.slice(0, 0) for batch in read_batches(location, "data/f.parquet"))
    staging_writer.replace_file(location, "data/f.parquet", nothing)
    assert list(folder.iterdir()) == []


def test_quality_rules_record_findings_and_uniqueness_spans_batches() -> None:
    state: dict[str, quality_rules.UniqueKeys] = {}
    rules = (Range(rule="range", column="n", min=0, max=10), Unique(rule="unique", columns=("id",)))
    first = pa.RecordBatch.from_pydict({"id": ["a", "b"], "n": [5, 11]})
    findings = Findings(2)
    quality_rules.apply(first, rules, findings, state)
    assert reasons(findings) == ["n: above 10"]
    findings = Findings(2)
    quality_rules.apply(pa.RecordBatch.from_pydict({"id": ["c", "a"], "n": [-1, 1]}), rules, findings, state)
    assert reasons(findings) == ["n: below 0", "id: duplicate in this run"]


@pytest.mark.parametrize("key", [b"sandbox-key", b"k" * 64, b"a longer key than one SHA-256 block " * 3])
def test_hmac_matches_the_standard_library_and_masking_keeps_the_tail(key: bytes) -> None:
    emails = pa.array(["a@example.com", "b@example.com", "a@example.com", None])
    phones = pa.array(["+4930", None, "", "+4930"])
    emails, phones = emails.slice(1), phones.slice(1)  # slices: the nulls of each are at an offset
    digests = hashing.hmac_sha256({"email": emails, "phone": phones}, key)

    def expected(values: pa.Array) -> list[bytes | None]:
        return [
            None if v is None else hmac.new(key, v.encode(), hashlib.sha256).digest()
            for v in values.to_pylist()
        ]

    assert digests["email"].type == pa.binary(32)
    assert digests["email"].to_pylist() == expected(emails)
    assert digests["phone"].to_pylist() == expected(phones)
    assert hashing.hmac_sha256({"email": emails.slice(0, 0)}, key)["email"].to_pylist() == []
    assert protection.mask(pa.array(["1234", None, "9"]), 2).to_pylist() == ["**34", None, "9"]


def test_hashing_a_batch_keeps_nothing_of_it_alive() -> None:
    """A shard hashes hundreds of batches: none may stay referenced by the DataFusion session."""
    before = pa.total_allocated_bytes()
    for batch in range(20):
        emails = pa.array([f"user{batch}-{n}@example.com" for n in range(20_000)])  # about 0.6 MB
        hashing.hmac_sha256({"email": emails}, b"k")
        hashing.fingerprints({"email": emails})
        del emails
    assert pa.total_allocated_bytes() - before < 1 << 20


def test_fingerprints_are_sha256_prefixes_and_tell_column_boundaries_apart() -> None:
    ids = pa.array(["tx-1", "tx-2", "tx-1", "tx-3"]).slice(1)
    expected = [int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "little") for v in ids.to_pylist()]
    assert hashing.fingerprints({"id": ids}).tolist() == expected
    split_one = hashing.fingerprints({"a": pa.array(["x,y"]), "b": pa.array(["z"])})
    split_two = hashing.fingerprints({"a": pa.array(["x"]), "b": pa.array(["y,z"])})
    assert split_one.tolist() != split_two.tolist()
    assert len(hashing.fingerprints({"id": pa.array([], pa.string())})) == 0
    typed = {
        "amount": pa.array([Decimal("1.20"), Decimal("1.20"), Decimal("3.00")], pa.decimal128(18, 2)),
        "at": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
        "ok": pa.array([True, True, False]),
        "n": pa.array([7, 7, 8]),
    }
    prints = hashing.fingerprints(typed)
    assert prints[0] == prints[1] != prints[2]


def test_protect_drops_and_never_stores_plain_pii() -> None:
    policy = Security(
        columns={
            "email": Protection(classification="pii", protect="hmac"),
            "ssn": Protection(classification="pii", protect="drop"),
        }
    )
    batch = pa.RecordBatch.from_pydict({"email": ["x@y.z"], "ssn": ["123"], "n": [1]})
    stored = protection.protect(batch, policy, b"k")
    assert stored.schema.names == ["email", "n"] and "x@y.z" not in str(stored.to_pylist())


def test_csv_ingestion_keeps_quoted_commas_and_newlines_and_rejects_ragged_rows() -> None:
    names = pipeline_named("transactions").contract.names[:3]
    text = b'transaction_id,account_id,event_time\n"a,1","acc\nx",t\nb,c\nd,e,f\n'
    batches = list(decoding.read(io.BytesIO(text), "csv", names))
    rows = [r for b in batches for r in b.batch.to_pylist()]
    rejects = [r for b in batches for r in b.rejects]
    assert rows[0] == {"transaction_id": b"a,1", "account_id": b"acc\nx", "event_time": b"t"}
    assert [r.reason for r in rejects] == ["expected 3 columns, found 2"] and rejects[0].raw == b"b,c"
    assert len(rows) == 2


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_record_cuts_fall_only_between_records_however_the_bytes_arrive(chunk: int) -> None:
    records = [["id", "memo"], ["a", 'say "hi",\r\nthen'], ["b", ""], ["c", '"\n"'], ["d", "x\ny\nz"]] * 20
    buffer = io.StringIO()
    csv.writer(buffer).writerows(records)
    text = buffer.getvalue().encode()
    for every in (1, 7, 30):
        cuts = decoding.RecordCuts(every, quoted=True)
        for start in range(0, len(text), chunk):
            cuts.feed(text[start : start + chunk])
        bounds = [0, *cuts.cuts, len(text)]
        pieces = [text[a:b].decode() for a, b in itertools.pairwise(bounds)]
        assert len(pieces) > len(text) // 120 and all(
            b - a >= every for a, b in itertools.pairwise(bounds[:-1])
        )
        assert [row for piece in pieces for row in csv.reader(io.StringIO(piece, newline=""))] == records


def test_ndjson_cuts_follow_any_newline_and_pieces_read_the_same_rows(tmp_path: Path) -> None:
    names = ("transaction_id", "memo")
    lines = [f'{{"transaction_id": "t{n}", "memo": "a \\"quoted\\" {n}"}}\n'.encode() for n in range(50)]
    text = b"".join(lines)
    (tmp_path / "f.ndjson").write_bytes(text)
    cuts = decoding.RecordCuts(100, quoted=False)
    cuts.feed(text)
    assert all(text[cut - 1 : cut] == b"\n" for cut in cuts.cuts) and len(cuts.cuts) > 10
    source = file_source(pipeline_named("transactions")).model_copy(update={"format": "ndjson"})
    bounds = [0, *cuts.cuts, len(text)]
    ids = [
        value
        for a, b in itertools.pairwise(bounds)
        for raw in decoding.read_uri(str(tmp_path / "f.ndjson"), names, source, a, b)
        for value in raw.batch.column("transaction_id").to_pylist()
    ]
    assert ids == [f"t{n}".encode() for n in range(50)]


def test_a_csv_piece_past_the_header_reads_its_columns_by_the_header(tmp_path: Path) -> None:
    names = ("memo", "transaction_id")  # not the file's order
    text = b'"transaction_id",memo\na,"x\ny"\nb,z\n'
    (tmp_path / "f.csv").write_bytes(text)
    start = text.index(b"b,z")
    source = file_source(pipeline_named("transactions"))
    (raw,) = list(decoding.read_uri(str(tmp_path / "f.csv"), names, source, start, len(text)))
    assert raw.batch.to_pylist() == [{"memo": b"z", "transaction_id": b"b"}]


def test_csv_ingestion_reads_only_an_empty_field_as_missing() -> None:
    names = ("merchant_country", "memo", "currency")
    text = b'merchant_country,memo,currency\nNA,N/A,NaN\n,"",NULL\n'
    (batch,) = list(decoding.read(io.BytesIO(text), "csv", names))
    assert batch.batch.to_pylist() == [
        {"merchant_country": b"NA", "memo": b"N/A", "currency": b"NaN"},  # Namibia, a memo, a bad code
        {"merchant_country": None, "memo": None, "currency": b"NULL"},
    ]


def test_ndjson_ingestion_rejects_only_the_broken_lines() -> None:
    names = ("transaction_id", "memo")
    text = b'{"transaction_id": "a", "memo": "x"}\n{"transaction_id": "b", broken\n{"transaction_id": "c"}\n'
    (batch,) = list(decoding.read(io.BytesIO(text), "ndjson", names))
    assert batch.batch.column("transaction_id").to_pylist() == [b"a", b"c"]
    assert len(batch.rejects) == 1 and batch.rejects[0].raw.startswith(b'{"transaction_id": "b"')


def test_robust_z_flags_an_outlier_only_with_enough_history() -> None:
    history = [{"rows_in": v} for v in (100.0, 102.0, 98.0, 101.0, 99.0)]
    assert anomalies.compare_to_history({"rows_in": 100.0}, history[:4])["status"] == "insufficient history"
    assert anomalies.compare_to_history({"rows_in": 101.0}, history)["status"] == "normal"
    outlier = anomalies.compare_to_history({"rows_in": 400.0}, history)
    assert outlier["status"] == "anomalies" and outlier["anomalies"] == ["rows_in"]


def test_a_stale_run_is_flagged_without_history() -> None:
    record = RunRecord(
        dataset="transactions",
        run="r",
        dag_run="",
        interval={},
        contract_version="1.0.0",
        full_refresh=False,
        rows_in=10,
        rows_stored=10,
        rows_quarantined=0,
        bytes_in=0,
        null_counts={},
        processing_seconds=0.1,
        stage_seconds={},
        gb_per_hour=None,
    )
    fresh = {"column": "event_time", "fresh": True, "age_hours": 1.0, "max_age_hours": 72}
    assert anomalies.assess(replace(record, freshness=(fresh,)), [])["status"] == "insufficient history"
    stale = anomalies.assess(replace(record, freshness=(fresh | {"fresh": False, "age_hours": 99.0},)), [])
    assert stale["status"] == "anomalies" and stale["anomalies"] == ["freshness.event_time"]


@pytest.mark.parametrize(
    ("latest_hours_ago", "fresh", "future"),
    [(1.0, True, False), (30.0, False, False), (-0.05, True, False), (-2.0, False, True)],
    ids=["recent", "too old", "3 minutes ahead: within the tolerance", "2 hours ahead: a wrong clock"],
)
def test_freshness_refuses_events_from_the_future(latest_hours_ago: float, fresh: bool, future: bool) -> None:
    from datetime import timedelta

    from base_platform.pipelines.spec import Freshness

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    rule = Freshness(rule="freshness", column="event_time", max_age_hours=24, future_tolerance_minutes=5)
    verdict = quality_rules.freshness(now - timedelta(hours=latest_hours_ago), rule, now)
    assert (verdict["fresh"], verdict["in_the_future"]) == (fresh, future)

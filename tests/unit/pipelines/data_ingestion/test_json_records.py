"""JSON records (stream entries, NDJSON lines) as a real producer writes them: every value is a
row or a reject with its reason, and a number keeps its exact text."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from base_platform.pipelines.data_ingestion import decoding
from base_platform.pipelines.spec import Column

NAMES = ("event_id", "amount", "flag")
NATIVE = decoding.native_json_schema(
    [
        Column(name="event_id", type="string"),
        Column(name="amount", type="decimal(18,2)"),
        Column(name="flag", type="bool"),
    ]
)


def rows(lines: list[bytes]) -> tuple[list[dict[str, bytes | None]], list[str]]:
    batch = decoding.ndjson_batch(lines, NAMES, max_bytes=4096)
    return batch.batch.to_pylist(), [reject.reason for reject in batch.rejects]


def test_a_json_number_boolean_or_null_is_a_value_and_a_decimal_keeps_its_exact_text() -> None:
    found, reasons = rows(
        [
            b'{"event_id": "a", "amount": 12.5, "flag": true}',
            b'{"event_id": "b", "amount": 123456789012345678.91, "flag": null}',
            b'{"event_id": 7, "amount": "3", "flag": false}',
        ]
    )
    assert reasons == []
    assert found == [
        {"event_id": b"a", "amount": b"12.5", "flag": b"true"},
        {"event_id": b"b", "amount": b"123456789012345678.91", "flag": None},  # a float would round it
        {"event_id": b"7", "amount": b"3", "flag": b"false"},
    ]


def test_each_kind_of_bad_value_is_a_reject_with_its_reason_and_the_good_rows_stay() -> None:
    lines = [
        b'{"event_id": "ok", "amount": "1"}',
        b'{"event_id": "x"}\n{"event_id": "y"}',  # two objects in one entry: one entry, refused
        b'{"event_id": "x"} {"event_id": "y"}',
        b"null",  # Arrow's JSON reader crashes the process on this one
        b"[1, 2]",
        b'{"event_id": ["a"]}',
        b'{"event_id": "a", "amount": {"value": 1}}',
        b'{"event_id": "a", "amount": NaN}',
        b'{"event_id": "' + b"z" * 5000 + b'"}',
        b"not json",
    ]
    found, reasons = rows(lines)
    assert found == [{"event_id": b"ok", "amount": b"1", "flag": None}]
    assert reasons == [
        "more than one JSON value",
        "more than one JSON value",
        "not a JSON object but null",
        "not a JSON object but an array",
        "event_id: an array where one value is expected",
        "amount: an object where one value is expected",
        "not JSON: NaN is not JSON",
        "over the size limit of 4096 bytes",
        "not JSON: Expecting value",
    ]


def test_one_object_over_several_lines_is_one_row() -> None:
    found, reasons = rows([b'{\n  "event_id": "a",\n  "amount": 2\n}'])
    assert (found, reasons) == ([{"event_id": b"a", "amount": b"2", "flag": None}], [])


def test_a_producer_that_sends_numbers_is_read_by_arrow_exactly_and_a_mix_value_by_value() -> None:
    numbers = [
        b'{"event_id": "a", "amount": 12.5, "flag": true}',
        b'{"event_id": "b", "amount": 7, "flag": false}',
    ]
    typed = decoding.ndjson_batch(numbers, NAMES, native=NATIVE).batch.to_pylist()
    assert [row["amount"] for row in typed] == [b"12.50", b"7.00"]
    mixed = decoding.ndjson_batch([*numbers, b'{"event_id": "c", "amount": "n/a"}'], NAMES, native=NATIVE)
    assert [row["amount"] for row in mixed.batch.to_pylist()] == [
        b"12.5",
        b"7",
        b"n/a",
    ]  # the contract refuses n/a


def test_a_lone_surrogate_becomes_invalid_utf8_for_the_contract_to_refuse() -> None:
    found, _ = rows([b'{"event_id": "\\ud800"}'])
    assert found[0]["event_id"] == "\ud800".encode("utf-8", "surrogatepass")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # NaN and Infinity are not JSON
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON_VALUES, min_size=1, max_size=20), st.booleans(), st.booleans())
def test_every_value_is_a_row_or_a_reject_and_a_scalar_field_keeps_its_json_text(
    values: list[object], pretty: bool, native: bool
) -> None:
    """Any JSON value a producer may send, read as text or with the contract's JSON types:
    counted once; a row's number is the number sent."""
    lines = [json.dumps(value, indent=2 if pretty else None).encode() for value in values]
    batch = decoding.ndjson_batch(lines, NAMES, native=NATIVE if native else None)
    stored = batch.batch.to_pylist()
    assert len(stored) + len(batch.rejects) == len(lines)
    expected = [
        v for v in values if isinstance(v, dict) and not any(isinstance(x, list | dict) for x in v.values())
    ]
    assert len(stored) == len(expected)
    for row, sent in zip(stored, expected, strict=True):
        for name in NAMES:
            value = sent.get(name)
            if value is None:
                assert row[name] is None
            elif isinstance(value, bool):
                assert row[name] == (b"true" if value else b"false")
            elif isinstance(value, int | float):
                assert Decimal(row[name].decode()) == Decimal(json.dumps(value))
            else:
                assert row[name] == value.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("number", ["1e2", "12.5", "-0.01", "7", "1E+1"])
def test_a_number_reads_the_same_whichever_path_its_batch_took(number: str) -> None:
    """Arrow's decimal reader (a batch of plain objects) and the per-line reader (a batch with
    one odd line) give the contract the same value."""
    from base_platform.pipelines.row_findings import Findings
    from base_platform.pipelines.schema_contracts import conformance
    from base_platform.pipelines.spec import Contract

    contract = Contract(
        name="c",
        version="1.0.0",
        primary_key=("event_id",),
        columns=(
            Column(name="event_id", type="string", nullable=False),
            Column(name="amount", type="decimal(18,2)"),
        ),
    )
    line = f'{{"event_id": "a", "amount": {number}}}'.encode()
    typed = []
    for lines in ([line], [line, b"null"]):  # the second batch goes line by line
        batch = decoding.ndjson_batch(
            lines, ("event_id", "amount"), native=decoding.native_json_schema(contract.columns)
        )
        findings = Findings(batch.batch.num_rows)
        typed.append(conformance.conform(batch.batch, contract, findings).column("amount")[0].as_py())
        assert not findings.bad().to_pylist()[0]
    assert typed[0] == typed[1] == Decimal(number)

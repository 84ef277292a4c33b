"""Schema contracts: raw bytes to the contract's types, with a finding for every value that does not fit.

Each check is a vectorised mask; a value that fails becomes null in the typed column and its
row is quarantined with the reason, so one bad value never fails a batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.spec import Column, Contract

NULL_BOOL = pa.scalar(None, pa.bool_())
DEFAULT_FORMATS = {"timestamp": "%Y-%m-%dT%H:%M:%S%z", "date": "%Y-%m-%d"}  # strptime, without ``format``
SAMPLE_ROWS = 1024  # to judge whether a column repeats enough to check each distinct value once
# RFC 3629's well-formed byte sequences. On binary input Arrow runs RE2 in Latin-1 mode, so
# each \xNN below matches one byte: this checks UTF-8 per value without leaving Arrow.
WELL_FORMED_UTF8 = (
    r"^(?:[\x00-\x7F]|[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]|[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}"
    r"|\xED[\x80-\x9F][\x80-\xBF]|\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}"
    r"|\xF4[\x80-\x8F][\x80-\xBF]{2})*$"
)

DICTIONARY_RATIO = 0.1  # at most one distinct value in ten rows


def arrow_type(column: Column) -> pa.DataType:
    if decimal := column.decimal:
        return pa.decimal128(*decimal)
    return {
        "string": pa.string(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        "bool": pa.bool_(),
        "binary": pa.binary(),
    }[column.type]


def arrow_schema(contract: Contract, enforce_nullability: bool = True) -> pa.Schema:
    """The stored schema; while a batch still holds bad rows, every field must allow nulls."""
    return pa.schema(
        [
            pa.field(c.name, arrow_type(c), nullable=c.nullable or not enforce_nullability)
            for c in contract.columns
        ]
    )


def as_text(values: pa.Array) -> tuple[pa.StringArray | None, pa.BooleanArray | None]:
    """The values as UTF-8 text when they all are (one validating cast), else which ones are not."""
    try:
        return values.cast(pa.string()), None
    except pa.ArrowInvalid:
        return None, not_utf8(values)


def not_utf8(values: pa.Array) -> pa.BooleanArray:
    """Which values are not well-formed UTF-8 (null is not a finding).

    Only a value with a byte above 0x7F can be malformed, so RE2 scans just those: an ASCII test
    over the raw bytes (viewed as text, which it reads byte by byte) is a tenth of RE2's cost.
    """
    suspects = pc.indices_nonzero(pc.invert(pc.string_is_ascii(values.view(pa.string()))))
    wrong = np.zeros(len(values), dtype=bool)
    wrong[suspects.to_numpy()] = pc.invert(
        pc.match_substring_regex(values.take(suspects), WELL_FORMED_UTF8)
    ).to_numpy(zero_copy_only=False)
    return pa.array(wrong)


def decode(values: pa.Array, name: str, findings: Findings) -> tuple[pa.StringArray, pa.Array]:
    """Text, and which values were missing in the input (null or empty, in every format)."""
    empty = pc.equal(pc.binary_length(values), 0)
    if pc.any(empty).as_py():
        values = pc.if_else(empty, pa.scalar(None, pa.binary()), values)
    missing = pc.is_null(values)
    text, bad = as_text(values)
    if bad is not None:
        findings.add(bad, f"{name}: invalid UTF-8")
        text = pc.if_else(pc.fill_null(bad, False), pa.scalar(None, pa.binary()), values).cast(pa.string())
    return text, missing


def matches(values: pa.Array, pattern: str) -> pa.Array:
    """Whether each value matches ``pattern``; null stays null.

    A column that repeats a few values (codes, countries) is matched once per distinct value,
    which is 2-3x cheaper than RE2 on every row; a column of mostly distinct values is matched
    directly, judged on a sample so it pays nothing for the encoding.
    """
    sample = values.slice(0, SAMPLE_ROWS)
    if pc.count_distinct(sample).as_py() > len(sample) * DICTIONARY_RATIO:  # as the writer judges
        return pc.match_substring_regex(values, pattern)
    encoded = pc.dictionary_encode(values)
    return pc.take(pc.match_substring_regex(encoded.dictionary, pattern), encoded.indices)


def render_text(typed: pa.Array, column: Column) -> pa.Array:
    """Typed values as the text :func:`conform` parses back for ``column`` (a time in its
    ``format``): how rows that arrive typed (a database, a derived result) meet the contract."""
    if column.type in ("timestamp", "date"):
        fmt = column.format or DEFAULT_FORMATS[column.type]
        if column.type == "timestamp" and "%f" not in fmt:
            typed = typed.cast(pa.timestamp("s", tz="UTC"), safe=False)  # Arrow's %S adds fractions
        return pc.strftime(typed, format=fmt)
    if column.type == "binary":
        return typed
    return typed.cast(pa.string())


def _parse(text: pa.StringArray, column: Column, findings: Findings) -> pa.Array:
    """Cast text to the column's type; unparseable values become null with a finding."""
    target = arrow_type(column)
    if column.type == "string":
        return text
    if column.type in ("timestamp", "date"):
        fmt = column.format or DEFAULT_FORMATS[column.type]
        parsed = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
        findings.add(
            pc.and_(pc.is_valid(text), pc.is_null(parsed)), f"{column.name}: not a {column.type} ({fmt})"
        )
        if column.type == "date":
            return parsed.cast(pa.date32())
        return parsed.cast(target)  # naive is UTC: a relabel, no conversion
    if decimal := column.decimal:
        whole = decimal[0] - decimal[1]
        shape = rf"^-?[0-9]{{1,{whole}}}(\.[0-9]{{1,{decimal[1]}}})?$"
    elif column.type == "float64":
        shape = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$|^-?inf$|^nan$"
    elif column.type == "int64":
        shape = r"^-?[0-9]{1,18}$"
    else:
        shape = r"^(true|false)$"
    wrong = pc.invert(pc.match_substring_regex(text, shape))
    findings.add(wrong, f"{column.name}: not a {column.type}")
    clean = pc.if_else(pc.fill_null(wrong, False), pa.scalar(None, pa.string()), text)
    if column.type == "bool":
        return pc.equal(clean, "true")
    return clean.cast(target)


def _constrain(text: pa.StringArray, missing: pa.Array, column: Column, findings: Findings) -> None:
    if not column.nullable:
        findings.add(missing, f"{column.name}: missing")
    if column.max_length and (pc.max(pc.binary_length(text)).as_py() or 0) > column.max_length:
        # a character is at least a byte: only when some value has more bytes are characters counted
        findings.add(
            pc.greater(pc.utf8_length(text), column.max_length),
            f"{column.name}: longer than {column.max_length}",
        )
    if column.pattern:
        findings.add(
            pc.invert(matches(text, column.pattern)),
            f"{column.name}: does not match {column.pattern}",
        )
    if column.allowed:
        findings.add(
            pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, pa.array(column.allowed)))),
            f"{column.name}: not one of {list(column.allowed)}",
        )


def conform(raw: pa.RecordBatch, contract: Contract, findings: Findings) -> pa.RecordBatch:
    """The batch in the contract's schema; every problem is recorded in ``findings``."""
    arrays = []
    for column in contract.columns:
        if column.type == "binary":  # bytes as they are: no text to decode or parse
            values = raw.column(column.name)
            if not column.nullable:
                findings.add(pc.is_null(values), f"{column.name}: missing")
            arrays.append(values)
            continue
        text, missing = decode(raw.column(column.name), column.name, findings)
        _constrain(text, missing, column, findings)
        arrays.append(_parse(text, column, findings))
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(contract, enforce_nullability=False))

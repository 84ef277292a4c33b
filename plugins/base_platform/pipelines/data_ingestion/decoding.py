"""Ingestion: decode a source file into Arrow record batches of raw bytes, one column per contract column.

Values stay binary here so that invalid UTF-8 is a per-row finding of the contract stage, not
an error that loses a whole block. Rows the parser cannot split into the right columns are
returned as rejects with their raw text, so every input row is accounted for.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from base_platform.files import Location
from base_platform.pipelines.spec import Column, FileSource

BLOCK_BYTES = 8 << 20  # a batch for the checks: big, so per-batch costs stay small per row
# what pyarrow's CSV reader reads at a time; it reads 32 of them ahead, so 8 MB blocks held 256 MB
READ_BYTES = 1 << 20
QUOTE = ord('"')
HEADER_BYTES = 1 << 20  # the most a CSV header may take, read again by each later piece of a file
MAX_RECORD_BYTES = 1 << 20  # the largest JSON record (a line, an entry) read; a larger one is a reject
REJECT, RAW = "_reject", "_raw"  # a derived result's refused rows: the reason, and the row as JSON


class SourceError(ValueError):
    """The file as a whole is unusable (e.g. a contract column is missing from its header)."""


@dataclass
class Reject:
    raw: bytes
    reason: str


@dataclass
class RawBatch:
    """Raw values (binary, null for empty) plus the rows that could not be split into columns;
    a source that knows where the batch leaves it (a stream's last entry id) says so."""

    batch: pa.RecordBatch
    rejects: list[Reject] = field(default_factory=list)
    position: Any = None
    known: bool = False  # rows read again behind the position: those whose key the table has are dropped


def raw_schema(names: Sequence[str]) -> pa.Schema:
    return pa.schema([(name, pa.binary()) for name in names])


class RecordCuts:
    """Where to cut a CSV or NDJSON file into pieces of about ``every`` bytes, at record boundaries.

    Fed the file's bytes in order (discover already streams them for the checksum). In RFC 4180
    CSV a quote inside a value is doubled, so a newline ends a record exactly when an even number
    of quotes precede it; an NDJSON line never holds a raw newline, so any newline does.
    """

    def __init__(self, every: int, quoted: bool) -> None:
        self.every, self.quoted = every, quoted
        self.cuts: list[int] = []
        self.offset = 0  # bytes fed so far
        self.odd = False  # inside a quoted value at ``offset``
        self.scratch = np.empty(0, dtype=bool)  # reused: a fresh mask per chunk halves the scan's speed

    def feed(self, chunk: bytes) -> None:
        position = 0
        while (wanted := (self.cuts[-1] if self.cuts else 0) + self.every - self.offset) < len(chunk):
            start = max(position, wanted)
            self._count_quotes(chunk, position, start)
            cut = self.record_end(chunk, start)
            if cut is None:
                position = len(chunk)
                break
            self.cuts.append(self.offset + cut)
            position = cut
        self._count_quotes(chunk, position, len(chunk))
        self.offset += len(chunk)

    def record_end(self, chunk: bytes, start: int) -> int | None:
        """Just after the first newline from ``start`` that ends a record; None if none in ``chunk``."""
        position = start
        while (newline := chunk.find(b"\n", position)) != -1:
            self._count_quotes(chunk, position, newline)
            if not self.odd:
                return newline + 1
            position = newline + 1
        self._count_quotes(chunk, position, len(chunk))
        return None

    def _count_quotes(self, chunk: bytes, start: int, stop: int) -> None:
        """Flip ``odd`` for each quote in ``chunk[start:stop]``; numpy scans 4 GB/s, ``bytes.count`` 0.75."""
        if not self.quoted or stop <= start:
            return
        if len(self.scratch) < stop - start:
            self.scratch = np.empty(stop - start, dtype=bool)
        quotes = self.scratch[: stop - start]
        np.equal(np.frombuffer(chunk, np.uint8, stop - start, start), QUOTE, out=quotes)
        self.odd ^= bool(np.count_nonzero(quotes) % 2)


def header_names(file: pa.NativeFile, options: dict[str, str | int | bool]) -> list[str]:
    """The column names of a CSV file's header, for a reader that starts past it."""
    head = file.read_at(HEADER_BYTES, 0)
    end = RecordCuts(HEADER_BYTES, quoted=True).record_end(head, 0)
    if end is None:
        raise SourceError(f"no CSV header within the first {HEADER_BYTES} bytes")
    header = pacsv.read_csv(
        io.BytesIO(head[:end]),
        parse_options=pacsv.ParseOptions(delimiter=str(options.get("delimiter", ","))),
    )
    return list(header.column_names)


def read(
    stream: BinaryIO,
    fmt: str,
    names: Sequence[str],
    options: dict[str, str | int | bool] | None = None,
    header: list[str] | None = None,
) -> Iterator[RawBatch]:
    """Batches of ``stream`` in file order; a CSV reader holds 32 reads ahead (32 MB) and one batch.

    ``header``: the CSV's column names, when ``stream`` starts past its header line.
    """
    if fmt == "csv":
        return _csv(stream, names, options or {}, header)
    if fmt == "ndjson":
        return _ndjson(stream, names)
    if fmt == "parquet":
        return _parquet(stream, names)
    raise SourceError(f"unknown format {fmt!r}")


def read_uri(
    uri: str, names: Sequence[str], source: FileSource, start: int = 0, end: int | None = None
) -> Iterator[RawBatch]:
    """:func:`read` of a file by URI (local or ``s3://``), streamed, as the spec's source says.

    ``start`` and ``end`` read one piece of the file (cut by :class:`RecordCuts`); ranged
    reads, so on S3 a piece costs only its own bytes. Reads are buffered ``BLOCK_BYTES`` at a
    time: each read of an S3 file is a GET, and the CSV reader asks for ``READ_BYTES``.
    """
    location = Location.of(uri)
    if source.format == "parquet":  # its footer is at the end: a random-access file, never cut
        with location.fs.open_input_file(location.base) as parquet:
            yield from read(parquet, source.format, names, source.options)
        return
    if end is None:
        with location.fs.open_input_stream(location.base, buffer_size=BLOCK_BYTES) as stream:
            yield from read(stream, source.format, names, source.options)
        return
    with location.fs.open_input_file(location.base) as file:
        header = header_names(file, source.options) if source.format == "csv" and start else None
        piece = pa.BufferedInputStream(file.get_stream(start, end - start), BLOCK_BYTES)
        yield from read(piece, source.format, names, source.options, header)


def _csv(
    stream: BinaryIO, names: Sequence[str], options: dict[str, str | int | bool], header: list[str] | None
) -> Iterator[RawBatch]:
    rejects: list[Reject] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} columns, found {row.actual_columns}"
        rejects.append(Reject(row.text.encode("utf-8", "surrogateescape"), reason))
        return "skip"

    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                block_size=min(READ_BYTES, BLOCK_BYTES), use_threads=True, column_names=header or []
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=str(options.get("delimiter", ",")),
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=raw_schema(names),
                include_columns=list(names),
                # only an empty field is missing: Arrow's default tokens would make Namibia ("NA") null
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise SourceError(f"cannot read the CSV header or first block: {exc}") from exc
    for batch in _joined(reader, BLOCK_BYTES):
        yield RawBatch(batch.select(list(names)), rejects[:])
        rejects.clear()
    if rejects:
        yield RawBatch(_empty(names), rejects)


def _joined(batches: Iterable[pa.RecordBatch], at_least: int) -> Iterator[pa.RecordBatch]:
    """Consecutive batches joined until they hold ``at_least`` bytes (the last one may hold fewer)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.nbytes
        if held >= at_least:
            yield pa.concat_batches(pending)
            pending, held = [], 0
    if pending:
        yield pa.concat_batches(pending)


def _empty(names: Sequence[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=raw_schema(names))


def _ndjson(stream: BinaryIO, names: Sequence[str], lines_per_chunk: int = 65_536) -> Iterator[RawBatch]:
    chunk: list[bytes] = []
    for line in _lines(stream):
        if line.strip():
            chunk.append(line)
        if len(chunk) >= lines_per_chunk:
            yield ndjson_batch(chunk, names)
            chunk = []
    if chunk:
        yield ndjson_batch(chunk, names)


def ndjson_batch(
    lines: Sequence[bytes],
    names: Sequence[str],
    max_bytes: int = MAX_RECORD_BYTES,
    native: pa.Schema | None = None,
) -> RawBatch:
    """JSON objects, one a value, as one batch: each value is a row or a reject with its reason.

    Arrow's reader takes a batch of plain one-line objects: first with every column as text
    (what our files send), then, if ``native`` is given (:func:`native_json_schema`), with the
    contract's numbers and booleans as JSON numbers and booleans (what most producers send);
    Arrow parses a decimal exactly or fails. Anything else (a mix, two objects on a line, a bare
    ``null``, on which Arrow's reader crashes the process) is parsed value by value, exactly
    (:func:`record_values`). Arrow's batch is trusted only with one row per value, so no value is
    ever split or merged.
    """
    plain = all(len(line) <= max_bytes and line[:1] == b"{" and line[-1:] == b"}" for line in lines)
    if plain and not any(b"\n" in line for line in lines):
        text = pa.schema([(name, pa.string()) for name in names])
        for schema in (text, native) if native is not None else (text,):
            try:
                table = pajson.read_json(
                    io.BytesIO(b"\n".join(lines)),
                    parse_options=pajson.ParseOptions(
                        explicit_schema=schema, unexpected_field_behavior="ignore"
                    ),
                )
            except pa.ArrowInvalid:
                continue
            if table.num_rows == len(lines):
                batches = (
                    table.select(list(names)).cast(text).cast(raw_schema(names)).combine_chunks().to_batches()
                )
                return RawBatch(pa.concat_batches(batches) if batches else _empty(names))
    return _exact_batch(lines, names, max_bytes)


def native_json_schema(columns: Sequence[Column]) -> pa.Schema:
    """The columns as a producer writes them in JSON: decimals, integers, floats and booleans as
    JSON numbers and booleans, the rest as strings."""
    native = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    return pa.schema(
        [
            (c.name, pa.decimal128(*c.decimal) if c.decimal else native.get(c.type, pa.string()))
            for c in columns
        ]
    )


def _exact_batch(lines: Sequence[bytes], names: Sequence[str], max_bytes: int) -> RawBatch:
    columns: list[list[bytes | None]] = [[] for _ in names]
    rejects: list[Reject] = []
    for line in lines:
        if len(line) > max_bytes:
            rejects.append(Reject(line, f"over the size limit of {max_bytes} bytes"))
            continue
        try:
            values = record_values(exact_json(line), names)
        except json.JSONDecodeError as exc:
            reason = "more than one JSON value" if exc.msg == "Extra data" else f"not JSON: {exc.msg}"
            rejects.append(Reject(line, reason))
            continue
        except (ValueError, RecursionError) as exc:
            rejects.append(Reject(line, f"not JSON: {exc}"[:200]))
            continue
        if isinstance(values, str):
            rejects.append(Reject(line, values))
            continue
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    arrays = [pa.array(column, pa.binary()) for column in columns]
    return RawBatch(pa.RecordBatch.from_arrays(arrays, schema=raw_schema(names)), rejects)


class JsonNumber(str):
    """A JSON number's exact text (``exact_json``): a decimal never passes through a float."""


def exact_json(data: bytes | str) -> Any:
    """JSON with every number kept as its text (:class:`JsonNumber`)."""
    return json.loads(data, parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_no_constant)


def _plain_number(number: str) -> str:
    """A JSON number in plain notation (``1e2`` as ``100``), as Arrow's decimal reader takes it,
    so a value reads the same whichever path its batch took; an exponent beyond 100 stays (the
    contract refuses it) rather than becoming a hundred-digit string."""
    if "e" not in number and "E" not in number:
        return number
    value = Decimal(number)
    return format(value, "f") if abs(value.adjusted()) <= 100 else number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def record_values(record: Any, names: Sequence[str]) -> list[bytes | None] | str:
    """A JSON object's values as the raw text a file would hold, one per column, or why it
    cannot be a row. Numbers keep their text (from :func:`exact_json`), booleans are
    ``true``/``false``, null and an absent key are missing; an array or an object where a
    column expects one value is refused, as is anything but an object."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_json_kind(record)}"
    values: list[bytes | None] = []
    for name in names:
        value = record.get(name)
        if value is None:
            values.append(None)
        elif isinstance(value, JsonNumber):
            values.append(_plain_number(value).encode())
        elif isinstance(value, str):
            values.append(value.encode("utf-8", "surrogatepass"))  # a lone surrogate: invalid UTF-8
        elif isinstance(value, bool):
            values.append(b"true" if value else b"false")
        elif isinstance(value, list | dict):
            return f"{name}: {_json_kind(value)} where one value is expected"
        else:  # a number parsed by a caller's own JSON reader
            values.append(json.dumps(value).encode())
    return values


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "null" if value is None else "a single value"


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines without their newline, read a block at a time (pyarrow streams have no readline)."""
    rest = b""
    while block := stream.read(BLOCK_BYTES):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _parquet(stream: BinaryIO, names: Sequence[str]) -> Iterator[RawBatch]:
    """Parquet rows as text. A file with ``REJECT`` and ``RAW`` columns (a derived result) carries
    rows its maker refused: each is a reject with that reason and raw text, like a bad CSV line."""
    source = pq.ParquetFile(stream)
    present = set(source.schema_arrow.names)
    missing = set(names) - present
    if missing:
        raise SourceError(f"columns missing from the file: {sorted(missing)}")
    refusals = {REJECT, RAW} <= present
    for batch in source.iter_batches(columns=[*names, *((REJECT, RAW) if refusals else ())]):
        rejects: list[Reject] = []
        if refusals and batch.column(REJECT).null_count < batch.num_rows:
            refused = pc.is_valid(batch.column(REJECT))
            for raw, reason in zip(
                pc.filter(batch.column(RAW), refused).to_pylist(),
                pc.filter(batch.column(REJECT), refused).to_pylist(),
                strict=True,
            ):
                rejects.append(Reject(raw.encode(), reason))
            batch = batch.filter(pc.invert(refused))
        arrays = [batch.column(name).cast(pa.string()).cast(pa.binary()) for name in names]
        yield RawBatch(pa.RecordBatch.from_arrays(arrays, schema=raw_schema(names)), rejects)

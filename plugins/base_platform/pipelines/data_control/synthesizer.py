"""Valid rows for any contract, plus injected faults: test data for a new dataset from day one.

``python -m base_platform.pipelines.data_control.synthesizer --contract NAME --rows N --out DIR``
``[--fault-rate R] [--format csv|ndjson] [--files F] [--seed S]``

Clean rows satisfy the contract (types, formats, nullability, lengths, patterns, allowed values,
unique keys) and the quality rules of every pipeline that reads it (ranges, regexes, accepted
values, not-null, unique, freshness), so a pipeline stores all of them. Each fault goes on rows
of its own, and ``DIR/_synth.json`` counts them, so a test can check that the quarantine holds
exactly the faulty rows. Generation is vectorised: values that follow a pattern are drawn from a
pool made with ``rstr``, so millions of rows take seconds.

``benchmarks.datagen`` is the ``transactions`` profile on top of this module's writer: realistic
distributions for the throughput benchmark.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import string
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.catalog.loader import CONFIG_DIR, load_model
from base_platform.pipelines.spec import (
    AcceptedValues,
    Column,
    Contract,
    Freshness,
    NotNull,
    QualityRule,
    Range,
    Regex,
    Unique,
    load_pipelines,
)

FAULTS = ("missing_required", "wrong_type", "broken_constraint", "duplicate_key", "invalid_utf8")
BAD_UTF8_MARK = "\x01BADUTF8\x01"  # replaced by invalid UTF-8 bytes once encoded
NULL_SHARE = 0.05  # of an optional column's values
POOL = 1000  # distinct values drawn per pattern column
REPEAT_SPAN = 8  # a + or * repeats at most this many times more than its minimum
SAFE = string.ascii_letters + string.digits + "._-+"  # what . and [^...] draw from: no quotes, no spaces
CATEGORIES = {"CATEGORY_DIGIT": string.digits, "CATEGORY_WORD": string.ascii_letters + string.digits + "_"}
CHUNK_ROWS = 500_000
TYPED = ("int64", "timestamp", "date", "bool")


class SynthError(ValueError):
    """The contract asks for something this generator cannot promise (e.g. unique keys of a pattern)."""


@dataclass
class Summary:
    rows: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def corrupt(self) -> int:
        return sum(self.faults.values())


def encode(columns: dict[str, pa.Array], fmt: str, header: bool) -> bytes:
    """CSV (quoted where needed) or NDJSON, with :data:`BAD_UTF8_MARK` turned into invalid UTF-8."""
    table = pa.table(columns)
    buffer = io.BytesIO()
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=header, quoting_style="needed"))
    else:
        import polars as pl

        pl.from_arrow(table).write_ndjson(buffer)  # type: ignore[union-attr]
    marker = BAD_UTF8_MARK.encode() if fmt == "csv" else json.dumps(BAD_UTF8_MARK)[1:-1].encode()
    return buffer.getvalue().replace(marker, b"caf\xe9 \xff\xfe")


class Synthesizer:
    """Columns of text, as a source file holds them, for one contract and the rules that read it."""

    def __init__(self, contract: Contract, rules: list[QualityRule], seed: int, now: datetime) -> None:
        self.contract = contract
        self.rules = rules
        self.rng = np.random.default_rng(seed)
        self.now = now
        self.unique = set(contract.primary_key) | {
            c for r in rules if isinstance(r, Unique) for c in r.columns
        }
        self.required = {c.name for c in contract.columns if not c.nullable} | {
            r.column for r in rules if isinstance(r, NotNull)
        }
        self.pools: dict[str, list[str]] = {}
        for column in contract.columns:
            self._check(column)

    def _patterns(self, column: Column) -> list[str]:
        found = [column.pattern] if column.pattern else []
        return found + [r.pattern for r in self.rules if isinstance(r, Regex) and r.column == column.name]

    def _allowed(self, column: Column) -> list[str] | None:
        sets = [set(column.allowed)] if column.allowed else []
        sets += [
            set(r.values) for r in self.rules if isinstance(r, AcceptedValues) and r.column == column.name
        ]
        if not sets:
            return None
        allowed = sorted(set.intersection(*sets))
        if not allowed:
            raise SynthError(f"column {column.name}: its allowed values and accepted_values rules share none")
        return allowed

    def _range(self, column: Column) -> tuple[float | None, float | None]:
        found = [r for r in self.rules if isinstance(r, Range) and r.column == column.name]
        lows = [r.min for r in found if r.min is not None]
        highs = [r.max for r in found if r.max is not None]
        return (max(lows) if lows else None, min(highs) if highs else None)

    def _check(self, column: Column) -> None:
        if column.name in self.unique and column.type == "string" and self._patterns(column):
            sample = self._key(column, np.arange(1))[0].as_py()
            if not all(re.search(p, sample) for p in self._patterns(column)):
                raise SynthError(
                    f"column {column.name} must be unique and match {self._patterns(column)}: "
                    "synth makes unique keys by numbering, and cannot promise both"
                )

    def clean(self, start: int, rows: int) -> dict[str, pa.Array]:
        numbers = np.arange(start, start + rows)
        columns = {}
        for column in self.contract.columns:
            values = self._key(column, numbers) if column.name in self.unique else self._values(column, rows)
            if column.name not in self.required:
                values = pc.if_else(pa.array(self.rng.random(rows) < NULL_SHARE), None, values)
            columns[column.name] = values
        return columns

    def _key(self, column: Column, numbers: np.ndarray) -> pa.Array:
        text = pa.array(numbers).cast(pa.string())
        if column.type == "int64":
            return text
        if column.type in ("timestamp", "date"):
            step = 1 if column.type == "timestamp" else 86_400  # one second, or one day, apart
            return self._format(column, int(self.now.timestamp()) - (numbers + 1) * step)
        if column.type != "string":
            raise SynthError(f"column {column.name}: a {column.type} cannot hold unique values")
        prefix = f"{column.name[:3]}-"
        width = max(9, len(str(int(numbers.max(initial=0)))))
        if column.max_length and len(prefix) + width > column.max_length:
            prefix, width = "", min(width, column.max_length)
        return pc.binary_join_element_wise(prefix, pc.utf8_lpad(text, width, "0"), "")

    def _values(self, column: Column, rows: int) -> pa.Array:
        allowed = self._allowed(column)
        if allowed is not None:
            return self._choice(allowed, rows)
        if column.type == "string":
            return self._choice(self._pool(column), rows)
        if column.type == "bool":
            return self._choice(["true", "false"], rows)
        low, high = self._range(column)
        if column.type == "int64":
            first, last = int(low if low is not None else 0), int(high if high is not None else 1_000_000)
            return pa.array(self.rng.integers(first, last, rows, endpoint=True)).cast(pa.string())
        if column.type == "float64":
            bottom, top = float(low if low is not None else 0), float(high if high is not None else 1_000_000)
            return pa.array(self.rng.uniform(bottom, top, rows)).cast(pa.string())
        if column.type == "binary":
            return pa.array(
                [bytes(self.rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(rows)], pa.binary()
            )
        if decimal := column.decimal:
            return self._decimals(decimal, low, high, rows)
        return self._times(column, rows)

    def _choice(self, values: list[str], rows: int) -> pa.Array:
        return pa.array(
            np.asarray(values, dtype=object)[self.rng.integers(0, len(values), rows)], pa.string()
        )

    def _pool(self, column: Column) -> list[str]:
        """Distinct printable values that match every pattern on the column and fit its length."""
        if column.name in self.pools:
            return self.pools[column.name]
        patterns = self._patterns(column)
        longest = column.max_length or 40
        if not patterns:
            pool = [f"{column.name}-{n}"[:longest] for n in self.rng.integers(0, 10**6, POOL)]
        else:
            found: set[str] = set()
            for _ in range(POOL * 20):
                value = example(patterns[0], self.rng)
                if len(value) <= longest and all(re.search(p, value) for p in patterns):
                    found.add(value)
                if len(found) >= POOL:
                    break
            if not found:
                raise SynthError(f"column {column.name}: no value of {longest} characters matches {patterns}")
            pool = sorted(found)
        self.pools[column.name] = pool
        return pool

    def _decimals(
        self, decimal: tuple[int, int], low: float | None, high: float | None, rows: int
    ) -> pa.Array:
        precision, scale = decimal
        top = 10 ** min(precision - scale, 9) - 1
        first, last = max(low if low is not None else 0, -top), min(high if high is not None else top, top)
        units = self.rng.integers(int(first * 10**scale), int(last * 10**scale), rows, endpoint=True)
        whole = pa.array(np.abs(units) // 10**scale).cast(pa.string())
        text = whole
        if scale:
            fraction = pc.utf8_lpad(pa.array(np.abs(units) % 10**scale).cast(pa.string()), scale, "0")
            text = pc.binary_join_element_wise(whole, fraction, ".")
        return pc.if_else(pa.array(units < 0), pc.binary_join_element_wise("-", text, ""), text)

    def _times(self, column: Column, rows: int) -> pa.Array:
        fresh = [r for r in self.rules if isinstance(r, Freshness) and r.column == column.name]
        span = timedelta(hours=min(r.max_age_hours for r in fresh) * 0.9) if fresh else timedelta(days=5)
        step = 1 if column.type == "timestamp" else 86_400
        ages = self.rng.integers(0, max(int(span.total_seconds()) // step, 1), rows) * step
        return self._format(column, int(self.now.timestamp()) - ages)

    def _format(self, column: Column, epoch_seconds: np.ndarray) -> pa.Array:
        default = "%Y-%m-%dT%H:%M:%S%z" if column.type == "timestamp" else "%Y-%m-%d"
        moments = pa.array(epoch_seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC"))
        return pc.strftime(moments, format=column.format or default)

    def corrupt(self, columns: dict[str, pa.Array], rate: float, summary: Summary) -> None:
        """Each applicable fault on rows of its own; a duplicate copies a clean row's key."""
        faults = {name: target for name in FAULTS if (target := self._fault_column(name)) is not None}
        rows = len(next(iter(columns.values())))
        picked = self.rng.permutation(rows)[: int(rows * rate)]
        if not faults or not len(picked):
            return
        clean = np.setdiff1d(np.arange(rows), picked)
        for (fault, column), chosen in zip(faults.items(), np.array_split(picked, len(faults)), strict=True):
            if not len(chosen):
                continue
            summary.faults[fault] = summary.faults.get(fault, 0) + len(chosen)
            if fault == "duplicate_key":
                copied = np.arange(rows)
                copied[chosen] = clean[self.rng.integers(0, len(clean), len(chosen))]
                for name in self.contract.primary_key:
                    columns[name] = pc.take(columns[name], pa.array(copied))
            else:
                _set(columns, column.name, chosen, self._bad_value(fault, column))

    def _fault_column(self, fault: str) -> Column | None:
        columns = self.contract.columns
        if fault == "missing_required":
            return next((c for c in columns if c.name in self.required), None)
        if fault == "wrong_type":
            return next((c for c in columns if c.type in TYPED or c.decimal), None)
        if fault == "broken_constraint":
            return next((c for c in columns if self._allowed(c) or self._patterns(c) or c.max_length), None)
        if fault == "duplicate_key":  # a fault only where a unique rule checks the key
            checked = any(
                isinstance(r, Unique) and set(r.columns) == set(self.contract.primary_key) for r in self.rules
            )
            return self.contract.column(self.contract.primary_key[0]) if checked else None
        return next(
            (c for c in columns if c.type == "string" and c.name not in self.contract.primary_key), None
        )

    def _bad_value(self, fault: str, column: Column) -> str:
        if fault == "missing_required":
            return ""
        if fault == "wrong_type":
            return "not-a-value"
        if fault == "invalid_utf8":
            return BAD_UTF8_MARK
        if column.max_length and not self._allowed(column) and not self._patterns(column):
            return "x" * (column.max_length + 1)
        return next(
            v for v in ("!!", "?", "~~~~") if not all(re.search(p, v) for p in self._patterns(column))
        )


def example(pattern: str, rng: np.random.Generator) -> str:
    """A short string that ``pattern`` matches, drawn with ``rng`` from Python's own parse of it.

    Not ``rstr``: it draws negated classes from ``set(string.printable)``, whose order changes
    with each process's hash seed (so a seed does not reproduce), and it includes whitespace.
    """
    import importlib

    parser: Any = importlib.import_module("re._parser")  # private: typeshed has no stub for it

    return _Drawer(pattern, rng).draw(parser.parse(pattern))


class _Drawer:
    def __init__(self, pattern: str, rng: np.random.Generator) -> None:
        self.pattern, self.rng = pattern, rng

    def draw(self, items: Any) -> str:
        return "".join(self.one(str(op), av) for op, av in items)

    def pick(self, choices: str) -> str:
        return choices[int(self.rng.integers(len(choices)))]

    def one(self, name: str, av: Any) -> str:
        if name == "LITERAL":
            return chr(av)
        if name in ("NOT_LITERAL", "ANY", "IN"):
            return self.pick(
                _class(av) if name == "IN" else SAFE.replace(chr(av), "") if name == "NOT_LITERAL" else SAFE
            )
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, items = av
            times = int(self.rng.integers(low, min(high, low + REPEAT_SPAN), endpoint=True))
            return "".join(self.draw(items) for _ in range(times))
        if name in ("SUBPATTERN", "BRANCH"):
            return self.draw(av[-1] if name == "SUBPATTERN" else av[1][int(self.rng.integers(len(av[1])))])
        if name == "AT":
            return ""
        raise SynthError(f"pattern {self.pattern!r}: synth cannot draw {name}")


def _class(items: Any) -> str:
    """The characters of a ``[...]`` class, from the safe alphabet when it is negated."""
    chosen: set[str] = set()
    negated = False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negated = True
        elif name == "LITERAL":
            chosen.add(chr(av))
        elif name == "RANGE":
            chosen |= {chr(c) for c in range(av[0], av[1] + 1)}
        elif name == "CATEGORY":
            chosen |= set(CATEGORIES.get(str(av), ""))
    return "".join(sorted(set(SAFE) - chosen if negated else chosen))


def _set(columns: dict[str, pa.Array], name: str, rows: np.ndarray, value: str) -> None:
    mask = np.zeros(len(columns[name]), dtype=bool)
    mask[rows] = True
    columns[name] = pc.if_else(pa.array(mask), value, columns[name])


def rules_for(contract: Contract) -> list[QualityRule]:
    """The quality rules of every pipeline that reads the contract: clean rows must pass them all."""
    return [rule for p in load_pipelines() if p.spec.contract == contract.name for rule in p.spec.quality]


def generate(
    contract: Contract,
    rows: int,
    out: Path,
    *,
    rules: list[QualityRule] | None = None,
    fmt: str = "csv",
    fault_rate: float = 0.0,
    files: int = 1,
    seed: int = 7,
    now: datetime | None = None,
) -> Summary:
    """Write ``rows`` rows in ``files`` files under ``out``; ``_synth.json`` says what was injected."""
    synthesizer = Synthesizer(
        contract, rules_for(contract) if rules is None else rules, seed, now or datetime.now(UTC)
    )
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary(rows=rows)
    per_file = -(-rows // files)
    for index in range(files):
        first, last = index * per_file, min(rows, (index + 1) * per_file)
        path = out / f"{contract.name}-{index:04d}.{fmt}"
        with path.open("wb") as sink:
            for start in range(first, last, CHUNK_ROWS):
                columns = synthesizer.clean(start, min(CHUNK_ROWS, last - start))
                synthesizer.corrupt(columns, fault_rate, summary)
                sink.write(encode(columns, fmt, header=start == first))
        summary.files.append(path.name)
        summary.bytes += path.stat().st_size
    (out / "_synth.json").write_text(json.dumps(asdict(summary) | {"corrupt": summary.corrupt}, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m base_platform.pipelines.data_control.synthesizer", description=__doc__
    )
    parser.add_argument("--contract", required=True, help="config/contracts/<NAME>.yaml")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not 0 <= args.fault_rate <= 1 or args.rows < 1 or args.files < 1:
        parser.error("need --rows >= 1, --files >= 1 and 0 <= --fault-rate <= 1")
    path = CONFIG_DIR / "contracts" / f"{args.contract}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / "contracts").glob("*.yaml"))
        parser.error(f"unknown contract {args.contract!r}; known: {', '.join(known)}")
    contract = load_model(Contract, path)
    try:
        summary = generate(
            contract, args.rows, args.out, fmt=args.format, fault_rate=args.fault_rate,
            files=args.files, seed=args.seed,
        )  # fmt: skip
    except SynthError as exc:
        parser.error(str(exc))
    faults = ", ".join(f"{n} {k}" for k, n in summary.faults.items()) or "no faults"
    print(f"{summary.rows} rows, {summary.bytes / 1e6:.1f} MB in {len(summary.files)} file(s), {faults}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

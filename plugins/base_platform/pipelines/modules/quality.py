"""Quality rules on typed batches: not_null, range, regex, accepted_values and unique within a shard.

Freshness is a property of the dataset, not of a row: :func:`freshness` reports it for the
manifest and the monitor instead of quarantining old rows.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines import duck
from base_platform.pipelines.findings import Findings
from base_platform.pipelines.spec import AcceptedValues, Freshness, NotNull, Range, Regex, Rule, Unique


class UniqueKeys:
    """Keys seen so far in this shard, as sorted 64-bit hashes: about 8 bytes a row."""

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def duplicates(self, hashes: np.ndarray) -> np.ndarray:
        """True for each hash already seen, earlier in the shard or earlier in this batch."""
        _, first = np.unique(hashes, return_index=True)
        repeated = np.ones(len(hashes), dtype=bool)
        repeated[first] = False
        position = np.searchsorted(self.seen, hashes)
        inside = position < len(self.seen)
        known = np.zeros(len(hashes), dtype=bool)
        known[inside] = self.seen[position[inside]] == hashes[inside]
        duplicate = repeated | known
        fresh = np.unique(hashes[~duplicate])
        self.seen = np.insert(self.seen, np.searchsorted(self.seen, fresh), fresh)
        return duplicate


def key_hashes(batch: pa.RecordBatch, columns: tuple[str, ...]) -> np.ndarray:
    """A 64-bit hash per row of the key columns (DuckDB's hash, zero-copy over Arrow)."""
    keys = pa.table({name: batch.column(name) for name in columns})
    expression = ", ".join(f'"{name}"' for name in columns)
    hashed = duck.query(f"select hash({expression}) as h from batch_keys", {"batch_keys": keys})  # noqa: S608
    hashes: np.ndarray = hashed.column("h").to_numpy()
    return hashes


def apply(
    batch: pa.RecordBatch, rules: tuple[Rule, ...], findings: Findings, keys: dict[str, UniqueKeys]
) -> None:
    """Record a finding for each rule a row breaks; ``keys`` carries uniqueness across batches."""
    for rule in rules:
        if isinstance(rule, NotNull):
            findings.add(pc.is_null(batch.column(rule.column)), f"{rule.column}: null")
        elif isinstance(rule, Range):
            _range(batch.column(rule.column), rule, findings)
        elif isinstance(rule, Regex):
            wrong = pc.invert(pc.match_substring_regex(batch.column(rule.column), rule.pattern))
            findings.add(wrong, f"{rule.column}: does not match {rule.pattern}")
        elif isinstance(rule, AcceptedValues):
            wrong = pc.invert(pc.is_in(batch.column(rule.column), pa.array(rule.values)))
            findings.add(
                pc.and_(pc.is_valid(batch.column(rule.column)), wrong), f"{rule.column}: not accepted"
            )
        elif isinstance(rule, Unique):
            seen = keys.setdefault(",".join(rule.columns), UniqueKeys())
            valid = (
                pc.and_(*[pc.is_valid(batch.column(c)) for c in rule.columns])
                if len(rule.columns) > 1
                else pc.is_valid(batch.column(rule.columns[0]))
            )
            duplicate = seen.duplicates(key_hashes(batch, rule.columns))
            findings.add(
                pc.and_(pa.array(duplicate), valid), f"{'+'.join(rule.columns)}: duplicate in this run"
            )


def _range(values: pa.Array, rule: Range, findings: Findings) -> None:
    numbers = values.cast(pa.float64())
    if rule.min is not None:
        findings.add(pc.less(numbers, rule.min), f"{rule.column}: below {rule.min:g}")
    if rule.max is not None:
        findings.add(pc.greater(numbers, rule.max), f"{rule.column}: above {rule.max:g}")


def freshness(latest: datetime | None, rule: Freshness, now: datetime) -> dict[str, object]:
    """Whether the newest stored event is recent enough, for the manifest."""
    age = None if latest is None else (now - latest).total_seconds() / 3600
    fresh = age is not None and age <= rule.max_age_hours
    return {
        "column": rule.column,
        "latest": latest.isoformat() if latest else None,
        "age_hours": None if age is None else round(age, 2),
        "max_age_hours": rule.max_age_hours,
        "fresh": fresh,
    }

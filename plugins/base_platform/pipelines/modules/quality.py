"""Quality rules on typed batches: not_null, range, regex, accepted_values and unique.

Unique is checked here within a shard; ``engine.commit`` extends it across the run's shards.

Freshness is a property of the dataset, not of a row: :func:`freshness` reports it for the
manifest and the monitor instead of quarantining old rows.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines import fusion
from base_platform.pipelines.findings import Findings
from base_platform.pipelines.spec import AcceptedValues, Freshness, NotNull, Range, Regex, Rule, Unique


class UniqueKeys:
    """Keys seen so far in this shard, as sorted 64-bit fingerprints: about 8 bytes a row."""

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def duplicates(self, fingerprints: np.ndarray) -> np.ndarray:
        """True for each key already seen, earlier in the shard or earlier in this batch."""
        distinct, first, inverse = np.unique(fingerprints, return_index=True, return_inverse=True)
        repeated = np.ones(len(fingerprints), dtype=bool)
        repeated[first] = False
        position = np.searchsorted(self.seen, distinct)  # sorted needles: one pass over seen
        known = np.zeros(len(distinct), dtype=bool)
        inside = position < len(self.seen)
        known[inside] = self.seen[position[inside]] == distinct[inside]
        self.seen = np.insert(self.seen, position[~known], distinct[~known])
        duplicate: np.ndarray = repeated | known[inverse]
        return duplicate


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
            _unique(batch, rule, findings, keys.setdefault(",".join(rule.columns), UniqueKeys()))


def keys_of(columns: dict[str, pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's key fingerprint, and whether it has a key at all (no null in the key columns)."""
    valid = np.logical_and.reduce(
        [pc.is_valid(values).to_numpy(zero_copy_only=False) for values in columns.values()]
    )
    return fusion.fingerprints(columns), valid


def _unique(batch: pa.RecordBatch, rule: Unique, findings: Findings, seen: UniqueKeys) -> None:
    """A row whose key appeared before is a duplicate; a row with a null in its key has none."""
    fingerprints, valid = keys_of({name: batch.column(name) for name in rule.columns})
    duplicate = np.zeros(batch.num_rows, dtype=bool)
    duplicate[valid] = seen.duplicates(fingerprints[valid])
    findings.add(pa.array(duplicate), f"{'+'.join(rule.columns)}: duplicate in this run")


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

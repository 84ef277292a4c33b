"""Quality rules on typed batches: not_null, range, regex, accepted_values and unique.

Unique is checked here within a shard; ``key_uniqueness`` extends it across the run's shards.

Freshness is a property of the dataset, not of a row: :func:`freshness` reports it for the
manifest and the monitor instead of quarantining old rows.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines.data_security import hashing
from base_platform.pipelines.row_findings import Findings
from base_platform.pipelines.schema_contracts import conformance
from base_platform.pipelines.spec import AcceptedValues, Freshness, NotNull, QualityRule, Range, Regex, Unique


class UniqueKeys:
    """Keys seen so far in this shard, as sorted runs of 64-bit fingerprints: about 8 bytes a key.

    Runs merge like a binary counter, so a shard of n keys costs O(n log n), not O(n²).
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.unstored: list[np.ndarray] = []  # keys seen whose first row was not stored (see ``keep``)
        # the last batch's fingerprints, and which rows are their key's first in the shard
        self._batch: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def held(self) -> int:
        return sum(len(run) for run in self.runs)

    def sorted_keys(self) -> np.ndarray:
        """Every key seen, sorted (for the run-wide check in ``key_uniqueness``); merges the runs."""
        if len(self.runs) != 1:
            self.runs = [merge_sorted(np.empty(0, np.uint64), *self.runs)]
        return self.runs[0]

    def duplicates(self, fingerprints: np.ndarray) -> np.ndarray:
        """True for each key already seen, earlier in the shard or earlier in this batch."""
        ordered = np.sort(fingerprints)
        again = ordered[1:] == ordered[:-1]
        distinct = np.concatenate([ordered[:1], ordered[1:][~again]])
        known = np.zeros(len(distinct), dtype=bool)
        for run in self.runs:
            known |= members(distinct, run)
        duplicate = members(fingerprints, distinct[known])
        if again.any():  # a key twice in this batch: every row after its first is a duplicate
            rows = np.flatnonzero(members(fingerprints, np.unique(ordered[1:][again])))
            _, first = np.unique(fingerprints[rows], return_index=True)
            duplicate[np.delete(rows, first)] = True
        self._add(distinct[~known])
        return duplicate

    def keep(self, kept: np.ndarray) -> None:
        """Remember the keys of the last batch whose first row is not stored (``kept``: one flag
        a row): a key's later rows are duplicates, so a key is stored where its first row is."""
        if self._batch is not None:
            fingerprints, first = self._batch
            self.unstored.append(fingerprints[first & ~kept])
            self._batch = None

    def stored_keys(self) -> np.ndarray:
        """The sorted keys of every row stored so far: those seen, less the few whose first row
        went to quarantine (no sort of every key again)."""
        seen = self.sorted_keys()
        gone = np.unique(np.concatenate(self.unstored)) if self.unstored else np.empty(0, np.uint64)
        kept: np.ndarray = np.delete(seen, np.searchsorted(seen, gone)) if len(gone) else seen
        return kept

    def _add(self, keys: np.ndarray) -> None:
        self.runs.append(keys)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            newest = self.runs.pop()
            self.runs[-1] = merge_sorted(self.runs[-1], newest)


def merge_sorted(*runs: np.ndarray) -> np.ndarray:
    """Sorted runs into one: timsort (numpy's stable sort) finds the runs and merges them."""
    merged = np.concatenate(runs)
    merged.sort(kind="stable")
    return merged


def members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each value is in the sorted set, by binary search."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    found: np.ndarray = sorted_set[position] == values
    return found


def apply(
    batch: pa.RecordBatch, rules: tuple[QualityRule, ...], findings: Findings, keys: dict[str, UniqueKeys]
) -> None:
    """Record a finding for each rule a row breaks; ``keys`` carries uniqueness across batches."""
    for rule in rules:
        if isinstance(rule, NotNull):
            findings.add(pc.is_null(batch.column(rule.column)), f"{rule.column}: null")
        elif isinstance(rule, Range):
            _range(batch.column(rule.column), rule, findings)
        elif isinstance(rule, Regex):
            wrong = pc.invert(conformance.matches(batch.column(rule.column), rule.pattern))
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
    return hashing.fingerprints(columns), valid


def _unique(batch: pa.RecordBatch, rule: Unique, findings: Findings, seen: UniqueKeys) -> None:
    """A row whose key appeared before is a duplicate; a row with a null in its key has none."""
    fingerprints, valid = keys_of({name: batch.column(name) for name in rule.columns})
    duplicate = np.zeros(batch.num_rows, dtype=bool)
    duplicate[valid] = seen.duplicates(fingerprints[valid])
    seen._batch = (fingerprints, valid & ~duplicate)
    findings.add(pa.array(duplicate), f"{'+'.join(rule.columns)}: duplicate in this run")


def _range(values: pa.Array, rule: Range, findings: Findings) -> None:
    numbers = values.cast(pa.float64())
    if rule.min is not None:
        findings.add(pc.less(numbers, rule.min), f"{rule.column}: below {rule.min:g}")
    if rule.max is not None:
        findings.add(pc.greater(numbers, rule.max), f"{rule.column}: above {rule.max:g}")


def freshness(latest: datetime | None, rule: Freshness, now: datetime) -> dict[str, object]:
    """Whether the newest stored event is recent enough, for the manifest.

    An event from further ahead than the rule's tolerance is not fresh either: it says a
    source's clock is wrong, not that the data is new.
    """
    age = None if latest is None else (now - latest).total_seconds() / 3600
    future = age is not None and -age * 60 > rule.future_tolerance_minutes
    fresh = age is not None and not future and age <= rule.max_age_hours
    return {
        "column": rule.column,
        "latest": latest.isoformat() if latest else None,
        "age_hours": None if age is None else round(age, 2),
        "max_age_hours": rule.max_age_hours,
        "in_the_future": future,
        "fresh": fresh,
    }

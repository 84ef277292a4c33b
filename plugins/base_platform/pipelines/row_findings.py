"""Per-row findings that the stages collect; a row with any finding goes to quarantine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Findings:
    """Masks with labels, joined into one reason per row only once, at the end of a batch."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._found: list[tuple[pa.BooleanArray, str]] = []

    def add(self, mask: pa.Array | pa.ChunkedArray, label: str) -> None:
        mask = pc.fill_null(mask, False)
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks()
        if pc.any(mask).as_py():
            self._found.append((mask, label))

    def bad(self) -> pa.BooleanArray:
        result = pa.array(np.zeros(self.rows, dtype=bool))
        for mask, _ in self._found:
            result = pc.or_(result, mask)
        return result

    def reasons(self, rows: pa.Array) -> pa.StringArray:
        """``"amount: not a decimal(18,2); currency: not accepted"`` for each of ``rows`` (bad rows)."""
        labels: list[list[str]] = [[] for _ in range(len(rows))]
        for mask, label in self._found:
            for position in np.flatnonzero(mask.take(rows).to_numpy(zero_copy_only=False)):
                labels[position].append(label)
        return pa.array(["; ".join(found) for found in labels], pa.string())

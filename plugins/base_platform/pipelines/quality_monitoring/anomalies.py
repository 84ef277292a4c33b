"""Quality monitoring: this run's metrics against the dataset's history, by robust z-score.

The robust z-score (0.6745 * (x - median) / MAD) is not dragged by the outliers it looks for;
with fewer than ``MIN_HISTORY`` earlier runs there is nothing to compare with, and it says so.
Freshness needs no history: a run whose newest event is older than a freshness rule allows is
flagged on its first run too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from base_platform.pipelines.run_records import RunRecord

THRESHOLD = 3.5
MIN_HISTORY = 5


def metrics(record: RunRecord) -> dict[str, float]:
    """Row count, quarantine rate, throughput and each column's null rate."""
    rows_in = record.rows_in or 1
    stored = record.rows_stored or 1
    values: dict[str, float] = {
        "rows_in": float(record.rows_in),
        "quarantine_rate": record.rows_quarantined / rows_in,
    }
    if record.gb_per_hour is not None:
        values["gb_per_hour"] = float(record.gb_per_hour)
    values |= {f"null_rate.{column}": count / stored for column, count in record.null_counts.items()}
    return values


def robust_z(value: float, history: Sequence[float]) -> float | None:
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    if mad == 0:
        return None if value == median else float("inf") if value > median else float("-inf")
    return 0.6745 * (value - median) / mad


def compare_to_history(current: dict[str, float], history: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Each metric with its z-score; anomalies are those beyond the threshold."""
    if len(history) < MIN_HISTORY:
        return {
            "status": "insufficient history",
            "history": len(history),
            "anomalies": [],
            "metrics": current,
        }
    rows = []
    for name, value in sorted(current.items()):
        past = [h[name] for h in history if name in h]
        z = robust_z(value, past) if len(past) >= MIN_HISTORY else None
        rows.append(
            {
                "metric": name,
                "value": value,
                "median": statistics.median(past) if past else None,
                "z": z,
                "anomaly": z is not None and abs(z) > THRESHOLD,
            }
        )
    anomalies = [row["metric"] for row in rows if row["anomaly"]]
    return {
        "status": "anomalies" if anomalies else "normal",
        "history": len(history),
        "anomalies": anomalies,
        "metrics": rows,
    }


def assess(record: RunRecord, history: Sequence[RunRecord]) -> dict[str, Any]:
    """The run against earlier runs' records, plus each freshness rule the run breaks."""
    report = compare_to_history(metrics(record), [metrics(earlier) for earlier in history])
    checks = [dict(check) for check in record.freshness or ()]
    stale = [f"freshness.{check['column']}" for check in checks if not check["fresh"]]
    report["freshness"] = checks
    if stale:
        report["anomalies"] = [*report["anomalies"], *stale]
        report["status"] = "anomalies"
    return report

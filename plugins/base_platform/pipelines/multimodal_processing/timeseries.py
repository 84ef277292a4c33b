"""Time series (a CSV or Parquet of ``timestamp`` and ``value``, one series per file): points
sorted (those out of order counted), duplicates counted, resampled to the spec's frequency with
its aggregation, gaps (empty buckets between the first and last) counted. The resampled series
is stored beside the table as Parquet (``resampled``: where); the row holds its summary.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.multimodal_processing.media_kinds import SideWriter, Unreadable

if TYPE_CHECKING:
    from base_platform.pipelines.spec import MediaSource

AGGREGATIONS = {"mean": "mean", "sum": "sum", "min": "min", "max": "max", "last": "last"}


def _read(data: bytes) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if data[:4] == b"PAR1":
            table = pq.read_table(io.BytesIO(data))
        else:
            types = {"timestamp": pa.timestamp("us", tz="UTC"), "value": pa.float64()}
            table = pacsv.read_csv(
                io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types=types, null_values=[])
            )
        times = table.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
        values = table.column("value").cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
        raise Unreadable(f"not a series of timestamp,value: {exc}") from exc
    if times.null_count or len(times) == 0:
        raise Unreadable("a series needs a timestamp on every point, and at least one point")
    return times, values


def extract(data: bytes, name: str, digest: str, source: MediaSource, side: SideWriter) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    times, values = _read(data)
    micros = times.combine_chunks().cast(pa.int64()).to_numpy()
    out_of_order = int(np.count_nonzero(micros[1:] < micros[:-1]))
    order = np.argsort(micros, kind="stable")
    micros = micros[order]
    numbers = values.combine_chunks().to_numpy(zero_copy_only=False)[order]
    duplicates = int(np.count_nonzero(micros[1:] == micros[:-1]))
    step = (source.frequency_seconds or 0) * 1_000_000
    buckets = micros // step
    first, last = int(buckets[0]), int(buckets[-1])
    table = pa.table({"bucket": buckets, "value": numbers})
    aggregated = table.group_by("bucket", use_threads=False).aggregate(
        [("value", AGGREGATIONS[source.aggregation])]
    )
    aggregated = aggregated.sort_by("bucket")
    resampled = pa.table(
        {
            "timestamp": pa.array(aggregated.column("bucket").to_numpy() * step).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "value": aggregated.column(f"value_{AGGREGATIONS[source.aggregation]}"),
        }
    )
    sink = io.BytesIO()
    pq.write_table(resampled, sink, compression="zstd")
    column = resampled.column("value")
    return {
        "series": name.rsplit("/", 1)[-1].rsplit(".", 1)[0],
        "start": _text(int(micros[0])),
        "end": _text(int(micros[-1])),
        "frequency": source.frequency,
        "points_in": str(len(micros)),
        "duplicates": str(duplicates),
        "out_of_order": str(out_of_order),
        "gaps": str((last - first + 1) - resampled.num_rows),
        "buckets": str(resampled.num_rows),
        "min": repr(pc.min(column).as_py()),
        "max": repr(pc.max(column).as_py()),
        "mean": repr(pc.mean(column).as_py()),
        "resampled": side(f"{digest}.parquet", sink.getvalue()),
    }


def _text(micros: int) -> str:
    """A point's time as the contract reads it (to the second, as the sensors write it)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

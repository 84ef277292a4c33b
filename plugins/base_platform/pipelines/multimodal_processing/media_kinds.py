"""multimodal_processing: each file of a ``kind: media`` source becomes rows of a typed table.

One module per media kind, each with ``extract(data, name, digest, source, side)``: a file's
values (the columns ``spec.MEDIA_COLUMNS`` names for its kind) as the contract's text, a dict
for a file of one row or :class:`Rows` for a file of several (a GeoJSON FeatureCollection), or
:class:`Unreadable` with the reason, which quarantines the file and never stops the batch.
``side`` stores what belongs beside the table rather than in it (thumbnails, resampled series),
under ``<storage.uri>/_media/``, named by content so a retry rewrites nothing; the row names it,
and maintenance deletes it once no snapshot's rows do.
"""

from __future__ import annotations

import hashlib
import importlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from base_platform.pipelines.spec import MediaSource

MEDIA_MODULES = {
    "document": "base_platform.pipelines.multimodal_processing.documents",
    "image": "base_platform.pipelines.multimodal_processing.images",
    "geojson": "base_platform.pipelines.multimodal_processing.geo",
    "timeseries": "base_platform.pipelines.multimodal_processing.timeseries",
}
EXTENSIONS = {  # the file names each kind reads (any others under the source are not its files)
    "document": (".pdf",),
    "image": (".jpg", ".jpeg", ".png", ".webp"),
    "geojson": (".geojson",),
    "timeseries": (".csv", ".parquet"),
}

SIDE_FOLDER = "_media"  # beside the dataset's data: thumbnails, resampled series
SideWriter = Callable[[str, bytes], str]  # (name, bytes) -> where it was stored


class Unreadable(ValueError):
    """A file this kind cannot turn into a row: quarantined with this reason."""


@dataclass(frozen=True)
class Rows:
    """What a file of several records gives (a FeatureCollection: a row per feature): the rows,
    and a reason for each record quarantined, so a bad record costs only itself and is counted."""

    rows: list[dict[str, Any]]
    rejects: list[str]


def reason(exc: Exception) -> str:
    """Why a file (or a record of it) is quarantined: an :class:`Unreadable`'s own words, or any
    other failure named, since a crafted file can break a decoder anywhere."""
    if isinstance(exc, Unreadable):
        return str(exc)
    return f"cannot be read: {type(exc).__name__}: {exc}"[:500]


class TooSlow(BaseException):
    """A file's reading passed ``max_seconds``. Not an ``Exception``: a decoder that catches
    ``ValueError`` or ``Exception`` cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TooSlow` once a file's reading takes longer than ``seconds`` (a timer
    signal: only in a process's main thread, and between Python steps, so a single C call of a
    decoder finishes first; elsewhere no limit). A timer already set (Airflow's
    ``execution_timeout`` uses the same one) is set again afterwards, less the time spent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TooSlow(f"took longer than max_seconds ({seconds:g} s)")

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expired)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    if outer and outer < seconds:  # the task's own deadline comes first: keep it
        signal.setitimer(signal.ITIMER_REAL, outer)
        signal.signal(signal.SIGALRM, previous)
        previous, seconds = None, 0.0
    try:
        yield
    finally:
        if previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001))


def nesting_depth(data: bytes) -> int:
    """How deep a JSON document's arrays and objects nest (brackets inside strings count too: an
    upper bound), without parsing it: what a parser would recurse into."""
    import numpy as np

    raw = np.frombuffer(data, np.uint8)
    steps = np.zeros(len(raw), np.int32)
    steps[(raw == ord("[")) | (raw == ord("{"))] = 1
    steps[(raw == ord("]")) | (raw == ord("}"))] = -1
    return int(np.cumsum(steps).max()) if len(raw) else 0


def extract(media: str, data: bytes, name: str, source: MediaSource, side: SideWriter) -> Rows:
    """One file's rows, each with the common columns and its kind's, and its records quarantined;
    raises :class:`Unreadable` when the file as a whole cannot be read."""
    module: Any = importlib.import_module(MEDIA_MODULES[media])
    common = {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": str(len(data))}
    found: dict[str, Any] | Rows = module.extract(data, name, common["sha256"], source, side)
    parts = found if isinstance(found, Rows) else Rows([found], [])
    return Rows([common | row for row in parts.rows], parts.rejects)

"""Vectorised hashing over Arrow through Apache DataFusion, one session per thread.

pyarrow has no SHA-256 kernel. DataFusion's (Rust ``sha2``) uses the CPU's SHA extensions,
which makes an HMAC about seven times cheaper than DuckDB's software ``sha256`` or a
per-value ``hashlib`` loop; both PII columns of a batch go through one query.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BLOCK = 64  # SHA-256's block size, which HMAC pads the key to
DIGEST = pa.binary(32)  # a SHA-256 digest, stored as Parquet FIXED_LEN_BYTE_ARRAY(32)
INPUT = "batch"  # the input table's name in a session, while a query runs
_local = threading.local()


def _session() -> Any:
    from datafusion import SessionConfig, SessionContext

    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = SessionContext(SessionConfig().with_target_partitions(1))
    return session


def _select(columns: dict[str, pa.Array], expressions: dict[str, Any]) -> pa.Table:
    """``expressions`` over ``columns``; the input is dropped from the session afterwards.

    ``from_arrow`` registers its table in the session's catalog: kept there, every batch a shard
    hashed stayed alive (1.5 GB of a 3.9 GB file's columns).
    """
    session = _session()
    frame = session.from_arrow(pa.table(columns), name=INPUT)
    try:
        result: pa.Table = frame.select(
            *[expr.alias(name) for name, expr in expressions.items()]
        ).to_arrow_table()
    finally:
        session.deregister_table(INPUT)
    if result.num_rows == 0:  # DataFusion returns no batches, hence no typed columns, for no rows
        return result
    return result.combine_chunks()


def hmac_sha256(columns: dict[str, pa.Array], key: bytes) -> dict[str, pa.Array]:
    """HMAC-SHA256 (RFC 2104) of every value, as its 32 raw bytes; nulls stay null.

    Raw, not hex: half the bytes to store, and random bytes that zstd does not try to squeeze
    (hex cost a shard a sixth of its CPU in the Parquet writer).
    """
    import hashlib

    from datafusion import col, lit
    from datafusion import functions as f

    if _rows(columns) == 0:
        return {name: pa.array([], DIGEST) for name in columns}
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(BLOCK, b"\0")
    inner = lit(pa.scalar(bytes(b ^ 0x36 for b in padded), pa.binary()))
    outer = lit(pa.scalar(bytes(b ^ 0x5C for b in padded), pa.binary()))
    expressions = {name: f.sha256(f.concat(outer, f.sha256(f.concat(inner, col(name))))) for name in columns}
    digests = _select({name: values.cast(pa.binary()) for name, values in columns.items()}, expressions)
    # DataFusion's concat reads null as empty; the stored value of a null stays null
    return {
        name: pa.FixedSizeBinaryArray.from_buffers(
            DIGEST, len(values), [_validity(values), _digest_bytes(digests, name)], values.null_count
        )
        for name, values in columns.items()
    }


def fingerprints(columns: dict[str, pa.Array]) -> np.ndarray:
    """A 64-bit fingerprint per row of the key columns: the first 8 bytes of a SHA-256.

    With several columns each is hashed, then the digests together, so ("a,b", "c") and
    ("a", "b,c") differ. A null key hashes like an empty one; callers exclude null keys.
    """
    from datafusion import col, lit
    from datafusion import functions as f

    rows = _rows(columns)
    if rows == 0:
        return np.empty(0, dtype=np.uint64)
    # DataFusion casts only strings and integers to binary; Arrow renders every type as text
    texts = {name: values.cast(pa.string()) for name, values in columns.items()}
    parts = [f.sha256(f.coalesce(col(name).cast(pa.binary()), lit(b""))) for name in texts]
    digest = parts[0] if len(parts) == 1 else f.sha256(f.concat(*parts))
    digests = _digest_bytes(_select(texts, {"fingerprint": digest}), "fingerprint")
    return (
        np.frombuffer(digests, np.uint8)
        .reshape(rows, DIGEST.byte_width)[:, :8]
        .copy()
        .view(np.uint64)
        .ravel()
    )


def each_digest(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """An HMAC column's digests one by one, each with its row: a multi-value column's lists
    flattened (``Protection.separator``), so a subject matches any value of a row."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values.flatten(), np.asarray(pc.list_parent_indices(values))
    return values, np.arange(len(values))


def digest_tokens(digests: pa.Array) -> np.ndarray:
    """A 64-bit token per HMAC digest: the first 8 bytes of its SHA-256. What a suppression list
    keeps of an erased subject: a one-way stand-in that is not the pseudonym itself, so no file
    holds the pseudonym, and only the key's holder can make one from a person's value."""
    from datafusion import col
    from datafusion import functions as f

    values = digests.drop_null().cast(pa.binary())
    if len(values) == 0:
        return np.empty(0, dtype=np.uint64)
    hashed = _digest_bytes(_select({"digest": values}, {"token": f.sha256(col("digest"))}), "token")
    return np.frombuffer(hashed, np.uint8).reshape(len(values), 32)[:, :8].copy().view(np.uint64).ravel()


def _digest_bytes(result: pa.Table, name: str) -> pa.Buffer:
    """The digests of a result column back to back: every one is 32 bytes, so no offsets are needed."""
    digests = result.column(name).chunk(0)
    start = int(np.frombuffer(digests.buffers()[1], dtype=np.int32)[digests.offset])
    data: pa.Buffer = digests.buffers()[2].slice(start, DIGEST.byte_width * len(digests))
    return data


def _validity(values: pa.Array) -> pa.Buffer | None:
    """A validity bitmap at offset 0 for ``values``, which may be a slice; None when nothing is null."""
    return None if values.null_count == 0 else pc.is_valid(values).buffers()[1]


def _rows(columns: dict[str, pa.Array]) -> int:
    return len(next(iter(columns.values())))

"""One in-memory DuckDB connection per thread, reused across batches: opening one costs more than a batch."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

_local = threading.local()


def query(sql: str, tables: dict[str, pa.Table], params: dict[str, Any] | None = None) -> pa.Table:
    """Run ``sql`` over Arrow ``tables`` (zero-copy) and return the result as Arrow."""
    import duckdb

    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    try:
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)

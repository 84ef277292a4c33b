"""``encrypt``: Parquet modular encryption, keys wrapped by the Vault simulator's transit engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from base_platform.pipelines.data_security.protection import decryption_properties
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest
from base_platform.pipelines.spec import Pipeline, Protection, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import repeat_first_rows_in_the_second_file


@pytest.fixture
def pipeline() -> Pipeline:
    base = pipeline_named("transactions")
    encrypt_memo = {"memo": Protection(classification="sensitive", protect="encrypt")}
    columns = dict(base.spec.security.columns) | encrypt_memo
    security = base.spec.security.model_copy(update={"columns": columns})
    return base.model_copy(update={"spec": base.spec.model_copy(update={"security": security})})


@pytest.mark.slow
def test_encrypted_columns_need_vault_to_read_and_the_rest_stay_readable(
    pipeline: Pipeline, tmp_path: Path, start_vault: Any
) -> None:
    """Also when the run-wide uniqueness check rewrites a file: it stays encrypted."""
    start_vault()
    generate(300, "csv", 0.0, tmp_path / "in", files=2)
    repeat_first_rows_in_the_second_file(tmp_path / "in", 2)
    shards = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    results = [engine.process_shard(pipeline, shard, "r", str(tmp_path / "out"), b"k") for shard in shards]
    manifest = engine.commit(
        pipeline, CommitRequest("r", tuple(results), str(tmp_path / "out"), {}, key=b"k")
    )
    assert (manifest.rows_stored, manifest.rows_quarantined) == (300, 2)

    table = tables.load("transactions")
    assert table is not None
    # Iceberg readers read every column but the encrypted ones (the footer is plaintext) ...
    assert table.scan(selected_fields=("transaction_id",)).to_arrow().num_rows == 300
    memos: list[str | None] = []
    for task in table.scan().plan_files():
        path = task.file.file_path
        assert pq.read_table(path, columns=["transaction_id"]).num_rows == task.file.record_count
        with pytest.raises((OSError, pa.ArrowException)):
            pq.read_table(path, columns=["memo"])
        # ... and only Parquet readers given Vault's transit key read those.
        decrypted = pq.read_table(path, columns=["memo"], decryption_properties=decryption_properties())
        memos += decrypted.column("memo").to_pylist()
    assert len(memos) == 300 and set(memos) & {"monthly subscription", "gift", None}

"""``encrypt``: Parquet modular encryption, keys wrapped by the Vault simulator's transit engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from base_platform.pipelines import engine
from base_platform.pipelines.modules.security import decryption_properties
from base_platform.pipelines.spec import Pipeline, Protection, load_pipelines
from benchmarks.datagen import generate


@pytest.fixture
def pipeline() -> Pipeline:
    base = load_pipelines()[0]
    encrypt_memo = {"memo": Protection(classification="sensitive", protect="encrypt")}
    columns = dict(base.spec.security.columns) | encrypt_memo
    security = base.spec.security.model_copy(update={"columns": columns})
    return base.model_copy(update={"spec": base.spec.model_copy(update={"security": security})})


def test_encrypted_columns_need_vault_to_read_and_the_rest_stay_readable(
    pipeline: Pipeline, tmp_path: Path, start_vault: Any
) -> None:
    start_vault()
    generate(300, "csv", 0.0, tmp_path / "in")
    (shard,) = engine.discover(pipeline, str(tmp_path / "in"), str(tmp_path / "out"), False)
    result = engine.process_shard(pipeline, shard, "r", str(tmp_path / "out"), b"k")
    manifest = engine.commit(pipeline, "r", [result], str(tmp_path / "out"), {})
    path = tmp_path / "out" / manifest["files"][0]["path"]

    assert pq.read_table(path, columns=["transaction_id"]).num_rows > 0  # plaintext footer, open columns
    with pytest.raises((OSError, pa.ArrowException)):
        pq.read_table(path, columns=["memo"])
    decrypted = pq.read_table(path, columns=["memo"], decryption_properties=decryption_properties())
    memos = decrypted.column("memo")
    assert set(memos.to_pylist()) & {"monthly subscription", "gift", None}

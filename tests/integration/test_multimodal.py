"""pipeline_documents and pipeline_images under dag.test(): each file a row, a broken one
quarantined without stopping the run, the HMAC key from Vault, thumbnails beside the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from base_platform.pipelines.data_storage import tables
from benchmarks.mediagen import generate
from tests.integration.test_breaker import incoming, run_dag  # noqa: F401 (incoming: the fixture)
from tests.integration.test_features import dags

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("kind", "dataset"), [("document", "documents"), ("image", "images")])
def test_a_media_pipeline_stores_a_row_per_file_and_quarantines_the_broken(
    incoming: Path,  # noqa: F811
    kind: str,
    dataset: str,
) -> None:
    root = incoming.parent.parent
    made = generate(kind, 60, 0.05, root / dataset / "incoming")
    run, states = run_dag(dags()[f"pipeline_{dataset}"])
    assert run.state == "success", states
    assert states["commit"] == states["audit"] == "success", states
    (record,) = tables.history(tables.load(dataset))
    assert (record.rows_in, record.rows_stored, record.rows_quarantined) == (
        60,
        made["stored"],
        made["quarantined"],
    )
    if kind == "image":
        assert len(list((root / dataset / "curated" / "_media").glob("*.webp"))) == made["stored"]

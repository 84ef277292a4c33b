"""dataset_sample and dataset_split on real tables: by key hash, stable as the data grows, with lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from base_platform.pipelines.data_control import sampling, table_actions
from base_platform.pipelines.data_control.form_params import SPLITS
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.run_records import RunRecord
from base_platform.pipelines.spec import Pipeline, pipeline_named
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import run


@pytest.fixture
def pipeline() -> Pipeline:
    return pipeline_named("transactions")


def grow(pipeline: Pipeline, tmp_path: Path, number: int, rows: int) -> RunRecord:
    generate(rows, "csv", 0.0, tmp_path / f"in{number}", seed=number)
    # datagen numbers ids from 0 on each call: give each run ids of its own
    for path in (tmp_path / f"in{number}").glob("*.csv"):
        path.write_bytes(path.read_bytes().replace(b'"tx-', f'"tx{number}-'.encode()))
    return run(pipeline, tmp_path / f"in{number}", tmp_path / "out", f"run-{number}")


def ids(name: str) -> set[str]:
    table = tables.load(name)
    assert table is not None
    return set(table.scan(selected_fields=("transaction_id",)).to_arrow().column(0).to_pylist())


@pytest.mark.slow
def test_a_split_keeps_every_key_in_its_split_as_the_data_grows(pipeline: Pipeline, tmp_path: Path) -> None:
    first = grow(pipeline, tmp_path, 1, 2000)
    made = sampling.split(pipeline, "80/10/10", dag_run="dataset_split/manual-1")
    parts = {name: ids(f"transactions__{name}") for name in SPLITS}
    assert set.union(*parts.values()) == ids("transactions")  # every row, once
    assert sum(len(p) for p in parts.values()) == first.rows_stored
    assert 1400 < len(parts["train"]) < 1800 and 100 < len(parts["test"]) < 300
    assert made["train"]["source"] == f"base.transactions@{first.snapshot_id}"
    snapshot = tables.load("transactions__train").current_snapshot()  # type: ignore[union-attr]
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.additional_properties[sampling.SOURCE] == made["train"]["source"]
    assert snapshot.summary.additional_properties["base.dag-run"] == "dataset_split/manual-1"

    again = sampling.split(pipeline, "80/10/10")
    assert {n: r["snapshot_id"] for n, r in again.items()} == {n: r["snapshot_id"] for n, r in made.items()}

    grow(pipeline, tmp_path, 2, 2000)
    sampling.split(pipeline, "80/10/10")
    grown = {name: ids(f"transactions__{name}") for name in SPLITS}
    for name in SPLITS:
        assert parts[name] <= grown[name]  # no key moved split
    assert set.union(*grown.values()) == ids("transactions")


@pytest.mark.slow
def test_a_sample_is_deterministic_by_key_in_rows_or_percent(pipeline: Pipeline, tmp_path: Path) -> None:
    grow(pipeline, tmp_path, 1, 3000)
    by_rows = sampling.sample(pipeline, "250")
    assert by_rows["rows"] == 250
    chosen = ids("transactions__sample")
    sampling.sample(pipeline, "10%")
    ten_percent = ids("transactions__sample")
    assert 200 < len(ten_percent) < 400
    assert sampling.sample(pipeline, "250")["rows"] == 250 and ids("transactions__sample") == chosen
    # The N-row sample is the N lowest positions, so the percent sample that reaches them holds them.
    assert chosen <= ten_percent or ten_percent <= chosen
    grow(pipeline, tmp_path, 2, 3000)
    sampling.sample(pipeline, "10%")
    assert ten_percent <= ids("transactions__sample")  # a percent sample only gains rows
    assert sampling.sample(pipeline, "100000")["rows"] == table_actions.read_dataset("transactions").num_rows


@pytest.mark.parametrize("size", ["0", "-3", "101%", "ten", "5 %x"])
def test_a_size_is_rows_or_a_percent(size: str) -> None:
    with pytest.raises(table_actions.ControlError, match="row count"):
        sampling.parse_size(size)


def test_a_split_is_one_of_the_offered_ones(pipeline: Pipeline) -> None:
    with pytest.raises(table_actions.ControlError, match="choose one of"):
        sampling.split(pipeline, "50/50/10")

"""The synthesizer: the engine stores every clean row it makes and quarantines exactly its faults,
for the transactions contract and for a contract it has never seen."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from base_platform.catalog.loader import CONFIG_DIR
from base_platform.pipelines.data_control import synthesizer
from base_platform.pipelines.spec import Pipeline, load_pipeline, pipeline_named
from tests.unit.pipelines.test_engine import run

SENSORS_CONTRACT = """
name: sensors
version: 1.0.0
primary_key: [reading_id]
columns:
  - {name: reading_id, type: int64, nullable: false}
  - {name: site, type: string, nullable: false, pattern: "^[A-Z]{2}-[0-9]{3}$"}
  - {name: kind, type: string, nullable: false, allowed: [temperature, humidity, pressure]}
  - {name: read_at, type: timestamp, nullable: false, format: "%Y-%m-%d %H:%M:%S"}
  - {name: day, type: date, nullable: true}
  - {name: value, type: "decimal(9,3)", nullable: false}
  - {name: calibrated, type: bool, nullable: true}
  - {name: note, type: string, nullable: true, max_length: 20}
"""
SENSORS_SPEC = """
name: sensors
contract: sensors
source: {uri: in, glob: "*.csv", format: csv}
quality:
  - {rule: range, column: value, min: -50, max: 150}
  - {rule: freshness, column: read_at, max_age_hours: 24}
storage: {uri: out, partition_by: ["day(read_at)"]}
"""


@pytest.fixture
def sensors(tmp_path: Path) -> Pipeline:
    for folder, name, text in (
        ("contracts", "sensors", SENSORS_CONTRACT),
        ("pipelines", "sensors", SENSORS_SPEC),
    ):
        (tmp_path / "config" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "config" / folder / f"{name}.yaml").write_text(text)
    return load_pipeline(tmp_path / "config/pipelines/sensors.yaml")


@pytest.mark.slow
def test_transactions_clean_rows_are_all_stored_and_the_faults_all_quarantined(tmp_path: Path) -> None:
    pipeline = pipeline_named("transactions")
    summary = synthesizer.generate(pipeline.contract, 4000, tmp_path / "in", fault_rate=0.05)
    assert set(summary.faults) == set(synthesizer.FAULTS) and summary.corrupt == 200
    record = run(pipeline, tmp_path / "in", tmp_path / "out")
    assert (record.rows_in, record.rows_quarantined) == (4000, summary.corrupt)
    assert record.rows_stored == 4000 - summary.corrupt


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.slow
def test_a_new_contract_gets_valid_rows_and_counted_faults(
    sensors: Pipeline, tmp_path: Path, fmt: str
) -> None:
    clean = synthesizer.generate(
        sensors.contract, 3000, tmp_path / "clean", rules=list(sensors.spec.quality), fmt=fmt, files=2
    )
    spec = sensors.spec.model_copy(
        update={"source": sensors.spec.source.model_copy(update={"glob": f"*.{fmt}", "format": fmt})}
    )
    sensors = sensors.model_copy(update={"spec": spec})
    record = run(sensors, tmp_path / "clean", tmp_path / "out")
    assert (record.rows_stored, record.rows_quarantined, clean.corrupt) == (3000, 0, 0)

    faulty = synthesizer.generate(
        sensors.contract, 3000, tmp_path / "faulty", rules=list(sensors.spec.quality), fmt=fmt,
        fault_rate=0.1, seed=8,
    )  # fmt: skip
    # the second run's keys repeat the first's: a full refresh replaces them
    record = run(sensors, tmp_path / "faulty", tmp_path / "out", "run-2", full=True)
    assert "duplicate_key" not in faulty.faults  # no unique rule checks the key here
    assert record.rows_quarantined == faulty.corrupt == 300
    assert json.loads((tmp_path / "faulty" / "_synth.json").read_text())["corrupt"] == 300


def test_the_values_follow_the_contract_and_the_rules(sensors: Pipeline, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    synthesizer.generate(sensors.contract, 2000, tmp_path, rules=list(sensors.spec.quality), now=now)
    text = pacsv.read_csv(
        tmp_path / "sensors-0000.csv", convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
    ).to_pydict()  # fmt: skip
    assert len(set(text["reading_id"])) == 2000
    assert {k for k in text["kind"]} <= {"temperature", "humidity", "pressure"}
    assert all(len(site) == 6 and site[2] == "-" for site in text["site"])
    assert all(-50 <= float(v) <= 150 for v in text["value"])
    times = [datetime.fromisoformat(str(t)).replace(tzinfo=UTC) for t in text["read_at"]]
    assert all(0 <= (now - t).total_seconds() <= 24 * 3600 for t in times)  # fresh
    assert 0 < sum(v is None for v in text["note"]) < 300  # optional columns have some nulls


def test_a_unique_key_with_a_pattern_is_refused_with_the_reason(sensors: Pipeline) -> None:
    contract = sensors.contract.model_copy(update={"primary_key": ("site",)})
    with pytest.raises(synthesizer.SynthError, match="site must be unique and match"):
        synthesizer.Synthesizer(contract, [], seed=1, now=datetime.now(UTC))


@pytest.mark.slow
def test_the_command_line_writes_the_files_and_says_what_it_injected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        synthesizer.main(
            ["--contract", "transactions", "--rows", "500", "--fault-rate", "0.1", "--out", str(tmp_path)]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("500 rows, ")
    assert (tmp_path / "transactions-0000.csv").exists()
    with pytest.raises(SystemExit):
        synthesizer.main(["--contract", "nope", "--rows", "5", "--out", str(tmp_path)])
    known = ", ".join(sorted(path.stem for path in (CONFIG_DIR / "contracts").glob("*.yaml")))
    assert f"unknown contract 'nope'; known: {known}" in capsys.readouterr().err


def test_a_seed_reproduces_the_same_bytes(sensors: Pipeline, tmp_path: Path) -> None:
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    for folder in ("a", "b"):
        synthesizer.generate(sensors.contract, 500, tmp_path / folder, fault_rate=0.1, seed=3, now=now)
    assert (tmp_path / "a/sensors-0000.csv").read_bytes() == (tmp_path / "b/sensors-0000.csv").read_bytes()

"""The engine's guarantees against random histories: rows the project did not make (missing keys,
bad amounts, lines that cannot be split, keys repeated within a file and across runs, the same
person under other spellings), over random sequences of runs, retries, erasures and replays.

After every step: each run counts every row once (rows_in = stored + quarantined), the primary
key is unique in every snapshot of ``main``, a repeated commit changes nothing, and no file of
the dataset holds an erased person's pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from base_platform.pipelines.data_control import erasure
from base_platform.pipelines.data_quality import key_uniqueness
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import CommitRequest, RunRecord
from base_platform.pipelines.spec import pipeline_named
from tests.conftest import iceberg_connection
from tests.unit.pipelines.test_engine import KEY
from tests.unit.pipelines.test_erase import HEADER

PEOPLE = ("ann@example.com", "bob@example.com", "cy@example.com")
SPELLINGS = {person: (person, person.upper(), f" {person.title()} ") for person in PEOPLE}


@st.composite
def lines(draw: Any) -> str:
    """One CSV line: a key from a small set (so keys repeat across runs), or none; a good or a
    bad amount; a person in any spelling; or a line with the wrong number of fields."""
    if draw(st.integers(0, 9)) == 0:
        return "broken,line\n"
    key = draw(st.sampled_from([f"k{n}" for n in range(12)] + [""]))
    amount = draw(st.sampled_from(["12.50", "0.01", "abc", "99999999"]))
    person = draw(st.sampled_from(PEOPLE))
    email = draw(st.sampled_from(SPELLINGS[person]))
    return f"{key},acc-1,2026-12-06T10:00:00Z,{amount},EUR,Shop,DE,pos,{email},+49123,1234,approved,\n"


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.lists(lines(), min_size=1, max_size=12)),
        st.tuples(st.just("retry"), st.none()),
        st.tuples(st.just("erase"), st.sampled_from(PEOPLE)),
        st.tuples(st.just("replay"), st.none()),
    ),
    min_size=1,
    max_size=6,
)


def pseudonym(person: str) -> bytes:
    return hmac.new(KEY, person.encode(), hashlib.sha256).digest()


def check_main(erased: set[str], target: Path) -> None:
    table = tables.load("transactions")
    assert table is not None
    for snapshot in tables.lineage(table):  # every snapshot a reader of main can travel to
        ids = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=("transaction_id",)).to_arrow()
        keys = ids.column("transaction_id").to_pylist()
        assert len(keys) == len(set(keys)), f"a key twice in snapshot {snapshot.snapshot_id}"
    needles = [pseudonym(person) for person in erased]
    for path in target.rglob("*.parquet"):
        data = path.read_bytes()
        values = {v for column in pq.read_table(path).columns for v in column.to_pylist()}
        for needle in needles:
            assert needle not in data and needle not in values, path


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_the_engine_keeps_its_guarantees_over_any_history(
    steps: list[tuple[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / uuid.uuid4().hex  # an example's own catalog and folders
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(home / "iceberg.db", home / "wh"))
    pipeline, source, target = pipeline_named("transactions"), home / "in", home / "out"
    source.mkdir(parents=True)
    erased: set[str] = set()
    last: tuple[CommitRequest, RunRecord] | None = None

    def commit(run_key: str, full: bool = False) -> tuple[CommitRequest, RunRecord] | None:
        shards = engine.discover(pipeline, str(source), str(target), full)
        results = [engine.process_shard(pipeline, shard, run_key, str(target), KEY) for shard in shards]
        if not results:
            return None
        request = CommitRequest(
            run_key, tuple(results), str(target), {"start": None, "end": None}, full, key=KEY
        )
        record = engine.commit(pipeline, request)
        assert record.rows_in == record.rows_stored + record.rows_quarantined
        return request, record

    for number, (action, argument) in enumerate(steps):
        if action == "run":
            (source / f"drop-{number}.csv").write_text(HEADER + "".join(argument))
            last = commit(f"run-{number}") or last
        elif action == "retry" and last is not None:
            before = _current()
            try:
                again = engine.commit(pipeline, last[0])  # the same run's commit, again: nothing changes
            except key_uniqueness.CommitFailed:  # its audit, dropped by an erasure, is gone: it says so
                assert _current() == before
                continue
            assert (again.snapshot_id, again.rows_in, again.rows_stored) == (
                last[1].snapshot_id,
                last[1].rows_in,
                last[1].rows_stored,
            )
            assert _current() == before
        elif action == "erase" and tables.load("transactions") is not None:
            erasure.erase(pipeline, argument, KEY, who="dpo", request=f"r-{number}")
            erased.add(argument)
        elif action == "replay" and any(source.iterdir()):
            last = commit(f"replay-{number}", full=True) or last
        if tables.load("transactions") is not None:
            check_main(erased, target)


def _current() -> int | None:
    table = tables.load("transactions")
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot is not None else None

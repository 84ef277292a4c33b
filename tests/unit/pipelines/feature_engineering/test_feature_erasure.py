"""Erasure reaches a feature view keyed by a pseudonym: spend per customer e-mail (an HMAC column
of transactions), materialised twice through the engine's real tables, published online
(SQLite, or a Redis with an AOF), then ``dataset_erase`` with the address spelt otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from base_platform.pipelines.data_control import erasure
from base_platform.pipelines.data_control.erasure import ErasedSubject
from base_platform.pipelines.feature_engineering import offline, online
from base_platform.pipelines.feature_engineering.views import FeatureView
from base_platform.pipelines.spec import pipeline_named
from tests.e2e.services import redis as redis_server
from tests.unit.pipelines.data_control.test_erasure_lineage import PSEUDONYM, holding
from tests.unit.pipelines.feature_engineering.test_features import HEADER
from tests.unit.pipelines.test_engine import KEY, run
from tests.unit.pipelines.test_erase import SUBJECT

OTHER = "someone.else@example.com"
VIEW = FeatureView.model_validate(
    {
        "name": "customer_spend",
        "entity": "customer_email",
        "source": {"dataset": "transactions", "timestamp": "event_time"},
        "aggregations": [{"column": "amount", "functions": ["sum", "count"], "windows": ["30d"]}],
    }
)


def land(root: Path, number: int, emails: list[str]) -> None:
    folder = root / f"in-{number}"
    folder.mkdir(parents=True)
    lines = [
        f"tx-{number}-{i},acct-{i % 3},2026-11-0{number}T1{i % 10}:00:00Z,{10 + i}.50,EUR,Shop,DE,pos,"
        f"{email},+4915000,1234,approved,"
        for i, email in enumerate(emails)
    ]
    (folder / "tx.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    record = run(pipeline_named("transactions"), folder, root / "tx", f"run-{number}")
    assert record.rows_stored == len(emails), record


def erase_features(subject: ErasedSubject) -> dict[str, Any]:
    """The follower, for this test's view (the config's views keep no pseudonym)."""
    return offline.erase_subject(subject, views=(VIEW,))


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The online store ``features_online`` names: SQLite under the root, or a Redis with an AOF."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    with redis_server(tmp_path / "online", "--appendonly", "yes") as url:
        monkeypatch.setenv("AIRFLOW_CONN_FEATURES_ONLINE", url)
        yield url


def redis_entries(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    found: list[bytes] = []
    for key in client.scan_iter("*"):
        if client.type(key) == b"hash":
            pairs = cast(dict[bytes, bytes], client.hgetall(key))
            found += [b"%s=%s" % pair for pair in pairs.items()]
    return found


@pytest.mark.slow
def test_an_erased_subject_leaves_the_feature_tables_and_the_online_store(tmp_path: Path, store: str) -> None:
    pipeline = pipeline_named("transactions")
    land(tmp_path, 1, [SUBJECT, OTHER, SUBJECT, OTHER])
    offline.materialise(VIEW)
    land(tmp_path, 2, ["Erase.ME@Example.com", OTHER])  # the same person: one pseudonym
    assert offline.materialise(VIEW).since is not None  # incremental: a second snapshot
    offline.publish_online(VIEW)
    hexed = PSEUDONYM.hex()
    before = online.get_online_features(VIEW.name, [hexed])["entities"][hexed]
    assert before == {"amount_sum_30d": "33.50", "amount_count_30d": 3}
    needles = (PSEUDONYM, PSEUDONYM[:16], hexed.encode())
    assert holding(tmp_path / "root" / "data" / "features", PSEUDONYM)

    report = erasure.erase(
        pipeline, " Erase.Me@EXAMPLE.com", KEY, who="dpo", request="gdpr-9", followers=(erase_features,)
    )

    assert report["erase_features"]["customer_spend"]["rows_removed"] == 3
    assert report["erase_features"]["customer_spend"]["online_entries_removed"] == 1
    assert [path for needle in needles for path in holding(tmp_path, needle)] == []
    if store != "sqlite":
        assert not any(needle in entry for needle in needles for entry in redis_entries(store))
    found = online.get_online_features(VIEW.name, [hexed, online.entity_text(_other())])["entities"]
    assert found[hexed] is None and found[online.entity_text(_other())] is not None  # the other stays
    kept = offline.read_offline(VIEW)
    assert kept.num_rows == 3 and PSEUDONYM not in kept.column("customer_email").to_pylist()

    offline.materialise(VIEW)  # as the erasure's event makes it run: the subject does not come back
    offline.publish_online(VIEW)
    assert offline.read_offline(VIEW).num_rows == 3
    assert [path for needle in needles for path in holding(tmp_path, needle)] == []


def _other() -> bytes:
    import hashlib
    import hmac

    return hmac.new(KEY, OTHER.encode(), hashlib.sha256).digest()


def test_an_entity_that_is_a_pseudonym_is_keyed_by_its_hex() -> None:
    import pyarrow as pa

    rows = pa.table({"who": pa.array([PSEUDONYM], pa.binary(32)), "n": [1]})
    assert list(online.encoded(rows, "who")) == [(PSEUDONYM.hex(), '{"n":1}')]


@pytest.mark.slow
def test_online_features_of_a_snapshot_a_rollback_left_are_not_served_until_materialised_again(
    tmp_path: Path,
) -> None:
    """Features computed from transactions' second snapshot; the dataset rolled back to its first:
    serving them would hand out what the datasets API refuses (a snapshot off main's history)."""
    from base_platform.pipelines.data_control import table_actions
    from base_platform.pipelines.data_storage import tables

    land(tmp_path, 1, [SUBJECT, OTHER])
    first = table_actions.dataset_table("transactions").current_snapshot()
    assert first is not None
    land(tmp_path, 2, [OTHER])
    offline.materialise(VIEW)
    offline.publish_online(VIEW)
    entity = online.entity_text(_other())
    assert offline.served_online(VIEW, [entity])["entities"][entity] is not None

    table_actions.rollback("transactions", first.snapshot_id, dry_run=False, who="ops", why="bad batch")
    with pytest.raises(tables.NotServed, match="not on main's history"):
        offline.served_online(VIEW, [entity])
    offline.materialise(VIEW)
    offline.publish_online(VIEW)
    again = offline.served_online(VIEW, [entity])
    assert again["source_snapshot"] == str(first.snapshot_id) and again["entities"][entity] is not None
